"""The paged KV cache's bookkeeping: block allocation, the prefix cache, and per-sequence block tables."""

from engine.kv.block_allocator import BlockAllocator, BlockAllocatorError, NoFreeBlocksError
from engine.kv.manager import KVCacheManager
from engine.kv.prefix_cache import PrefixCache, block_hash

__all__ = [
    "BlockAllocator",
    "BlockAllocatorError",
    "KVCacheManager",
    "NoFreeBlocksError",
    "PrefixCache",
    "block_hash",
]
