"""Reference-counted allocation of KV-cache block ids.

The paged KV cache is ``num_blocks`` fixed-size blocks; this class hands out their ids. Each block is in
exactly one of three states:

- free: on the free list, holding nothing anyone wants;
- in use: referenced by ``ref_count(block) >= 1`` sequences (several when a prefix block is shared);
- parked: unreferenced but holding K/V the prefix cache may still hand out again. Parked blocks leave
  that state either by being referenced again (``incref``) or by being evicted (``release_parked``).

The allocator never looks at tokens or hashes: the prefix cache decides what is parked, the KV-cache
manager composes the two. Misuse (freeing a free block, referencing one never allocated) raises
``BlockAllocatorError``: it is always an engine bug, and silently continuing would let two sequences
write the same block.
"""

from __future__ import annotations

from collections import deque


class BlockAllocatorError(RuntimeError):
    """A block id was used in a way its state forbids (double free, use of a free block)."""


class NoFreeBlocksError(BlockAllocatorError):
    """allocate() was called with an empty free list; callers check ``num_free`` first."""


class BlockAllocator:
    def __init__(self, num_blocks: int) -> None:
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be a positive integer, got {num_blocks!r}")
        self.num_blocks = num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._is_free = [True] * num_blocks
        self._ref_counts = [0] * num_blocks

    @property
    def num_free(self) -> int:
        return len(self._free)

    def ref_count(self, block_id: int) -> int:
        return self._ref_counts[self._check_id(block_id)]

    def is_free(self, block_id: int) -> bool:
        return self._is_free[self._check_id(block_id)]

    def is_parked(self, block_id: int) -> bool:
        return not self.is_free(block_id) and self._ref_counts[block_id] == 0

    def allocate(self) -> int:
        """Take a free block; its reference count becomes 1."""
        if not self._free:
            raise NoFreeBlocksError(f"all {self.num_blocks} KV-cache blocks are in use or parked")
        block_id = self._free.popleft()
        self._is_free[block_id] = False
        self._ref_counts[block_id] = 1
        return block_id

    def incref(self, block_id: int) -> int:
        """Add a reference to a block in use or parked (a prefix-cache hit); return the new count."""
        if self.is_free(block_id):
            raise BlockAllocatorError(f"block {block_id} is free; allocate it before referencing it")
        self._ref_counts[block_id] += 1
        return self._ref_counts[block_id]

    def decref(self, block_id: int, park: bool = False) -> int:
        """Drop a reference; return the count left.

        At zero the block goes back to the free list, or is parked when ``park`` is true (its contents
        are registered in the prefix cache and may be reused).
        """
        if self.ref_count(block_id) == 0:
            state = "free" if self._is_free[block_id] else "parked"
            raise BlockAllocatorError(f"block {block_id} is {state}, not referenced: double free")
        self._ref_counts[block_id] -= 1
        if self._ref_counts[block_id] == 0 and not park:
            self._push_free(block_id)
        return self._ref_counts[block_id]

    def release_parked(self, block_id: int) -> None:
        """Return a parked block to the free list (the prefix cache evicted it)."""
        if not self.is_parked(block_id):
            raise BlockAllocatorError(
                f"block {block_id} is not parked (ref count {self._ref_counts[block_id]}, "
                f"free={self._is_free[block_id]}); only parked blocks can be released"
            )
        self._push_free(block_id)

    def check_invariants(self) -> None:
        assert len(self._free) == sum(self._is_free), "free list and free flags disagree"
        assert len(set(self._free)) == len(self._free), "a block is on the free list twice"
        for block_id in self._free:
            assert self._is_free[block_id] and self._ref_counts[block_id] == 0, f"free block {block_id} is referenced"
        assert all(count >= 0 for count in self._ref_counts), "negative reference count"

    def _push_free(self, block_id: int) -> None:
        self._is_free[block_id] = True
        self._free.append(block_id)

    def _check_id(self, block_id: int) -> int:
        if not isinstance(block_id, int) or not 0 <= block_id < self.num_blocks:
            raise BlockAllocatorError(f"block id {block_id!r} is outside [0, {self.num_blocks})")
        return block_id
