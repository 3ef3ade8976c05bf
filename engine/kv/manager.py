"""The KV-cache manager: which blocks each sequence's keys and values live in.

It composes the :class:`BlockAllocator` (ids and reference counts) with the :class:`PrefixCache`
(computed full blocks found again by their chained hash) and keeps each sequence's ``block_table``.
It deals in block ids only: the K/V tensors themselves ([num_blocks, block_size, kv_heads, head_dim]
per layer) belong to the model runner, which turns a block table into slots as
``slot(pos) = block_table[pos // block_size] * block_size + pos % block_size``.

The manager is owned by the single engine loop (through the scheduler) and takes no locks.

A sequence's life here:
1. ``match_prefix(seq)`` when it is first scheduled (or resumed after preemption): its leading full
   blocks that are already cached are shared (reference count + 1) and counted as computed. The last
   token is always left to compute, because the forward pass over it yields the logits to sample from.
2. ``allocate_slots(seq, n)`` before each forward pass: blocks for ``num_computed_tokens + n`` tokens,
   all or nothing.
3. ``commit(seq)`` after the pass: blocks that just became full are registered in the prefix cache.
4. ``free(seq)`` when it finishes or is preempted: references dropped; registered blocks stay cached
   (evictable, least recently released first), the others return to the free list.
"""

from __future__ import annotations

from engine.kv.block_allocator import BlockAllocator
from engine.kv.prefix_cache import PrefixCache, block_hash
from engine.sequence import Sequence


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_cache: bool = True) -> None:
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_cache = enable_prefix_cache
        self.allocator = BlockAllocator(num_blocks)
        self.prefix_cache = PrefixCache()
        # Sequences that hold at least one block, by identity; used to prove nothing leaks.
        self._holders: dict[int, Sequence] = {}

    # -- capacity ---------------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        """Blocks a new allocation can take: free ones plus cached ones nobody references."""
        return self.allocator.num_free + self.prefix_cache.num_evictable

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def usage(self) -> float:
        """Fraction of blocks referenced by live sequences (cached-but-unreferenced blocks count as free)."""
        return 1.0 - self.num_free_blocks / self.num_blocks

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def num_allocatable_tokens(self, seq: Sequence) -> int:
        """How many new tokens ``allocate_slots(seq, n)`` could take right now."""
        room = (len(seq.block_table) + self.num_free_blocks) * self.block_size
        return max(0, room - seq.num_computed_tokens)

    # -- a sequence's blocks ----------------------------------------------------------------------

    def match_prefix(self, seq: Sequence) -> int:
        """Share the cached blocks of ``seq``'s leading full blocks; return the number of tokens reused."""
        assert not seq.block_table and seq.num_computed_tokens == 0, f"match_prefix on a placed sequence: {seq}"
        if not self.enable_prefix_cache:
            return 0
        bs = self.block_size
        # Never the whole sequence: the last token must run through the model to produce logits.
        max_blocks = (seq.num_tokens - 1) // bs
        parent: bytes | None = None
        for i in range(max_blocks):
            hash_ = block_hash(parent, seq.token_ids[i * bs : (i + 1) * bs])
            block_id = self.prefix_cache.lookup(hash_)
            if block_id is None:
                break
            self.prefix_cache.mark_used(block_id)
            self.allocator.incref(block_id)
            seq.block_table.append(block_id)
            seq.block_hashes.append(hash_)
            parent = hash_
        reused = len(seq.block_table) * bs
        if reused:
            self._holders[id(seq)] = seq
        seq.num_computed_tokens = reused
        if not seq.num_preemptions:  # a resumed sequence's own blocks coming back are not prompt-cache hits
            seq.num_cached_tokens = min(reused, seq.num_prompt_tokens)
        return reused

    def allocate_slots(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Make room for ``num_new_tokens`` more tokens of ``seq``; False (and no change) if it cannot."""
        needed = self.blocks_for(seq.num_computed_tokens + num_new_tokens) - len(seq.block_table)
        if needed <= 0:
            return True  # the common decode step: the last block still has room
        if needed > self.num_free_blocks:
            return False
        for _ in range(needed):
            seq.block_table.append(self._take_block())
        self._holders[id(seq)] = seq
        return True

    def commit(self, seq: Sequence) -> None:
        """Register the blocks of ``seq`` that are now full and computed in the prefix cache."""
        if not self.enable_prefix_cache:
            return
        bs = self.block_size
        num_full = min(seq.num_computed_tokens, seq.num_tokens) // bs
        if num_full <= len(seq.block_hashes):
            return
        parent = seq.block_hashes[-1] if seq.block_hashes else None
        for i in range(len(seq.block_hashes), num_full):
            hash_ = block_hash(parent, seq.token_ids[i * bs : (i + 1) * bs])
            self.prefix_cache.insert(hash_, seq.block_table[i])
            seq.block_hashes.append(hash_)
            parent = hash_

    def free(self, seq: Sequence) -> None:
        """Drop all of ``seq``'s block references (finish, abort or preemption)."""
        # Tail blocks first: they are released earliest, so they are evicted before the shared heads.
        for block_id in reversed(seq.block_table):
            cached = self.prefix_cache.holds(block_id)
            if self.allocator.decref(block_id, park=cached) == 0 and cached:
                self.prefix_cache.mark_evictable(block_id)
        seq.block_table = []
        seq.block_hashes = []
        self._holders.pop(id(seq), None)

    def slot_mapping(self, seq: Sequence, start: int, count: int) -> list[int]:
        """Cache slots of tokens ``start .. start + count - 1`` of ``seq`` (blocks must be allocated)."""
        bs = self.block_size
        table = seq.block_table
        return [table[pos // bs] * bs + pos % bs for pos in range(start, start + count)]

    # -- checks -----------------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Every block is exactly one of free, referenced (by live block tables) or cached-evictable."""
        self.allocator.check_invariants()
        self.prefix_cache.check_invariants()
        references = [0] * self.num_blocks
        for seq in self._holders.values():
            assert seq.block_table, f"{seq} is tracked as a holder but holds no blocks"
            assert len(set(seq.block_table)) == len(seq.block_table), f"{seq} lists a block twice"
            assert seq.num_computed_tokens <= len(seq.block_table) * self.block_size, f"{seq} computed past its blocks"
            assert len(seq.block_hashes) <= len(seq.block_table), f"{seq} has hashes for blocks it lacks"
            for block_id in seq.block_table:
                references[block_id] += 1
        for block_id, expected in enumerate(references):
            count = self.allocator.ref_count(block_id)
            assert count == expected, f"block {block_id}: ref count {count}, but {expected} block tables list it"
            parked = self.allocator.is_parked(block_id)
            assert parked == self.prefix_cache.is_evictable(block_id), (
                f"block {block_id}: parked={parked} but evictable={self.prefix_cache.is_evictable(block_id)}"
            )
            if self.prefix_cache.holds(block_id):
                assert not self.allocator.is_free(block_id), f"cached block {block_id} is on the free list"
        in_use = sum(1 for count in references if count)
        assert in_use + self.num_free_blocks == self.num_blocks, "a block is neither free, cached nor in use"

    def _take_block(self) -> int:
        if self.allocator.num_free == 0:
            evicted = self.prefix_cache.evict()
            assert evicted is not None, "num_free_blocks promised a block that does not exist"
            self.allocator.release_parked(evicted)
        return self.allocator.allocate()
