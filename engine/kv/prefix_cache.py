"""The prefix cache: full KV blocks found again by the tokens they hold.

A full block of ``block_size`` tokens gets the hash

    h_0 = H(ROOT, tokens[0:B]),    h_i = H(h_{i-1}, tokens[i*B:(i+1)*B])

so a block's hash names its whole prefix, not only its own tokens: the same ``B`` tokens at a different
depth, or after a different history, hash differently, and the K/V they hold (which depends on every
earlier token through attention) is never reused in the wrong place. ``H`` is BLAKE2b with a 128-bit
digest, so an accidental collision (which would silently serve another prompt's K/V) is not a practical
concern. Only full blocks are ever registered: a partly filled block is still being written.

The cache maps hash -> block id for blocks whose K/V has been computed. A registered block that no
sequence references any more is *evictable*: it stays in the cache (parked in the allocator) and sits
in an LRU queue; when the allocator runs out of free blocks the least recently released one is evicted.
A referenced block is never evicted.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence as TokenIds

ROOT_HASH = b"tritonforge-prefix-root"


def block_hash(parent_hash: bytes | None, token_ids: TokenIds[int]) -> bytes:
    """The chained hash of one full block, given the hash of the block before it (None for the first)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(ROOT_HASH if parent_hash is None else parent_hash)
    digest.update(array("q", token_ids).tobytes())
    return digest.digest()


class PrefixCache:
    def __init__(self) -> None:
        self._block_of: dict[bytes, int] = {}
        self._hash_of: dict[int, bytes] = {}
        # Evictable (registered, unreferenced) blocks, least recently released first.
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self.num_hits = 0
        self.num_queries = 0
        self.num_evictions = 0

    def __len__(self) -> int:
        return len(self._block_of)

    @property
    def num_evictable(self) -> int:
        return len(self._evictable)

    def lookup(self, hash_: bytes) -> int | None:
        """The block holding this prefix block's K/V, or None; counts toward the hit rate."""
        self.num_queries += 1
        block_id = self._block_of.get(hash_)
        if block_id is not None:
            self.num_hits += 1
        return block_id

    def holds(self, block_id: int) -> bool:
        return block_id in self._hash_of

    def is_evictable(self, block_id: int) -> bool:
        return block_id in self._evictable

    def insert(self, hash_: bytes, block_id: int) -> bool:
        """Register a freshly computed full block; False when the prefix is already cached elsewhere.

        Two sequences with the same prompt may compute the same block at once; the first one registered
        wins and the other block stays private (freed normally when its sequence ends).
        """
        if hash_ in self._block_of:
            return False
        assert block_id not in self._hash_of, f"block {block_id} is already registered under another hash"
        self._block_of[hash_] = block_id
        self._hash_of[block_id] = hash_
        return True

    def mark_evictable(self, block_id: int) -> None:
        """The last reference to a registered block was dropped: it becomes the newest eviction candidate."""
        assert block_id in self._hash_of, f"block {block_id} is not in the prefix cache"
        self._evictable[block_id] = None
        self._evictable.move_to_end(block_id)

    def mark_used(self, block_id: int) -> None:
        """A prefix hit took an evictable block back into use."""
        self._evictable.pop(block_id, None)

    def evict(self) -> int | None:
        """Forget the least recently released unreferenced block and return its id (None if none)."""
        if not self._evictable:
            return None
        block_id, _ = self._evictable.popitem(last=False)
        del self._block_of[self._hash_of.pop(block_id)]
        self.num_evictions += 1
        return block_id

    def hit_rate(self) -> float:
        return self.num_hits / self.num_queries if self.num_queries else 0.0

    def check_invariants(self) -> None:
        assert len(self._block_of) == len(self._hash_of), "hash and block maps differ in size"
        for hash_, block_id in self._block_of.items():
            assert self._hash_of.get(block_id) == hash_, f"maps disagree on block {block_id}"
        for block_id in self._evictable:
            assert block_id in self._hash_of, f"evictable block {block_id} is not registered"
