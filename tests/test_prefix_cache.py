"""PrefixCache: chained block hashes and LRU eviction of unreferenced blocks only."""

from __future__ import annotations

import hashlib
import random
from array import array

import pytest

from engine.kv.prefix_cache import ROOT_HASH, PrefixCache, block_hash

pytestmark = pytest.mark.engine


def test_hash_matches_an_independent_blake2b_of_parent_and_tokens():
    tokens = [7, 1, 300000, 2]
    expected = hashlib.blake2b(ROOT_HASH + array("q", tokens).tobytes(), digest_size=16).digest()
    assert block_hash(None, tokens) == expected
    parent = b"\x01" * 16
    expected_child = hashlib.blake2b(parent + array("q", tokens).tobytes(), digest_size=16).digest()
    assert block_hash(parent, tokens) == expected_child


def test_equal_blocks_at_different_depths_hash_differently():
    block = [5, 6, 7, 8]
    first = block_hash(None, block)
    second = block_hash(first, block)  # the same tokens again, one block deeper
    assert first != second
    assert block_hash(second, block) not in (first, second)


def test_hash_depends_on_the_whole_history():
    tail = [9, 9, 9, 9]
    after_a = block_hash(block_hash(None, [1, 2, 3, 4]), tail)
    after_b = block_hash(block_hash(None, [1, 2, 3, 5]), tail)
    assert after_a != after_b
    # ...and is a pure function of it.
    assert after_a == block_hash(block_hash(None, [1, 2, 3, 4]), tail)


def test_token_order_and_values_matter():
    rng = random.Random(0)
    seen = set()
    for _ in range(2000):
        tokens = [rng.randrange(50) for _ in range(4)]
        seen.add((tuple(tokens), block_hash(None, tokens)))
    distinct_blocks = {t for t, _ in seen}
    distinct_hashes = {h for _, h in seen}
    assert len(distinct_hashes) == len(distinct_blocks)


def test_insert_and_lookup_first_registration_wins():
    cache = PrefixCache()
    h = block_hash(None, [1, 2])
    assert cache.lookup(h) is None
    assert cache.insert(h, 3)
    assert not cache.insert(h, 4)  # the same prefix computed twice: the first block stays
    assert cache.lookup(h) == 3
    assert cache.holds(3) and not cache.holds(4)
    assert cache.hit_rate() == pytest.approx(0.5)
    cache.check_invariants()


def test_evicts_least_recently_released_first_and_forgets_its_hash():
    cache = PrefixCache()
    hashes = {b: block_hash(None, [b, b + 1]) for b in range(4)}
    for b, h in hashes.items():
        cache.insert(h, b)
    for b in (2, 0, 3):  # released in this order; block 1 stays referenced
        cache.mark_evictable(b)
    assert cache.num_evictable == 3
    assert cache.evict() == 2
    assert cache.lookup(hashes[2]) is None and not cache.holds(2)
    assert cache.evict() == 0
    assert cache.evict() == 3
    assert cache.evict() is None  # block 1 is referenced: never evicted
    assert cache.lookup(hashes[1]) == 1
    assert cache.num_evictions == 3
    cache.check_invariants()


def test_reused_block_leaves_the_eviction_queue_and_rejoins_at_the_back():
    cache = PrefixCache()
    for b in range(3):
        cache.insert(block_hash(None, [b]), b)
        cache.mark_evictable(b)
    cache.mark_used(0)  # a prefix hit takes block 0 back into use
    assert not cache.is_evictable(0)
    assert cache.evict() == 1
    cache.mark_evictable(0)  # released again: now the most recent
    assert cache.evict() == 2
    assert cache.evict() == 0
