"""KVCacheManager: block tables, prefix reuse, all-or-nothing allocation, eviction, leak checks."""

from __future__ import annotations

import pytest

from engine.kv.manager import KVCacheManager
from engine.sequence import Sequence

pytestmark = pytest.mark.engine

BS = 4


def computed(kv: KVCacheManager, seq: Sequence) -> Sequence:
    """Place ``seq`` and pretend a forward pass computed all its tokens (as the engine would)."""
    kv.match_prefix(seq)
    assert kv.allocate_slots(seq, seq.num_uncomputed_tokens)
    seq.num_computed_tokens = seq.num_tokens
    kv.commit(seq)
    kv.check_invariants()
    return seq


def test_allocate_slots_covers_the_tokens_and_no_more():
    kv = KVCacheManager(8, BS)
    seq = Sequence("a", list(range(1, 10)))  # 9 tokens -> 3 blocks
    assert kv.allocate_slots(seq, 9)
    assert len(seq.block_table) == 3 and len(set(seq.block_table)) == 3
    seq.num_computed_tokens = 9
    assert kv.allocate_slots(seq, 3)  # tokens 9..11 still fit in block 3
    assert len(seq.block_table) == 3
    assert kv.allocate_slots(seq, 4)  # token 12 opens a fourth block
    assert len(seq.block_table) == 4
    assert kv.num_free_blocks == 4
    assert kv.usage() == pytest.approx(0.5)
    kv.check_invariants()


def test_allocate_slots_is_all_or_nothing():
    kv = KVCacheManager(3, BS)
    other = Sequence("other", [1] * 8)
    assert kv.allocate_slots(other, 8)  # 2 of 3 blocks
    seq = Sequence("a", [2] * 8)
    assert not kv.allocate_slots(seq, 8)  # needs 2, 1 is free
    assert seq.block_table == [] and kv.num_free_blocks == 1
    assert kv.allocate_slots(seq, 4)
    kv.check_invariants()


def test_slot_mapping_follows_the_block_table():
    kv = KVCacheManager(8, BS)
    seq = Sequence("a", list(range(1, 7)))
    seq.block_table = [5, 2]  # hand-placed so the expected slots are independent of the allocator
    assert kv.slot_mapping(seq, 0, 6) == [20, 21, 22, 23, 8, 9]
    assert kv.slot_mapping(seq, 3, 2) == [23, 8]


def test_finished_prefix_is_reused_by_a_later_sequence():
    kv = KVCacheManager(8, BS)
    first = computed(kv, Sequence("a", list(range(1, 11))))  # blocks: [1..4] [5..8] [9, 10]
    kv.free(first)
    second = Sequence("b", [*range(1, 9), 42, 43, 44])
    assert kv.match_prefix(second) == 8
    assert second.block_table == first_blocks(kv, first_tokens=list(range(1, 9)))
    assert second.num_computed_tokens == 8 and second.num_cached_tokens == 8
    kv.check_invariants()


def first_blocks(kv: KVCacheManager, first_tokens: list[int]) -> list[int]:
    """The blocks a fresh sequence with exactly these leading tokens would be served (looked up directly)."""
    from engine.kv.prefix_cache import block_hash

    parent, blocks = None, []
    for i in range(0, len(first_tokens), BS):
        parent = block_hash(parent, first_tokens[i : i + BS])
        blocks.append(kv.prefix_cache._block_of[parent])
    return blocks


def test_never_reuses_the_whole_prompt():
    kv = KVCacheManager(8, BS)
    kv.free(computed(kv, Sequence("a", list(range(1, 9)))))  # two full blocks cached
    again = Sequence("b", list(range(1, 9)))
    assert kv.match_prefix(again) == 4  # the last token must still run to produce logits
    assert again.num_uncomputed_tokens == 4
    one_block = Sequence("c", [1, 2, 3, 4])
    assert kv.match_prefix(one_block) == 0


def test_blocks_are_shared_while_both_sequences_live():
    kv = KVCacheManager(8, BS)
    a = computed(kv, Sequence("a", list(range(1, 10))))
    b = computed(kv, Sequence("b", [*range(1, 9), 77]))
    assert b.block_table[:2] == a.block_table[:2]
    assert b.block_table[2] != a.block_table[2]
    assert [kv.allocator.ref_count(x) for x in a.block_table] == [2, 2, 1]
    kv.free(a)
    assert [kv.allocator.ref_count(x) for x in b.block_table] == [1, 1, 1]
    kv.check_invariants()
    kv.free(b)
    assert kv.num_free_blocks == 8
    kv.check_invariants()


def test_same_tokens_at_another_depth_are_not_reused():
    kv = KVCacheManager(8, BS)
    kv.free(computed(kv, Sequence("a", [1, 2, 3, 4, 5, 6, 7, 8, 0])))
    shifted = Sequence("b", [5, 6, 7, 8, 1, 2, 3, 4, 0])  # both blocks cached, but at the other depth
    assert kv.match_prefix(shifted) == 0
    repeated = Sequence("c", [1, 2, 3, 4, 1, 2, 3, 4, 0])  # block 0 matches, its copy at depth 1 must not
    assert kv.match_prefix(repeated) == 4
    kv.check_invariants()


def test_concurrently_computed_duplicate_prefix_stays_private_and_is_freed():
    kv = KVCacheManager(8, BS)
    a, b = Sequence("a", list(range(1, 10))), Sequence("b", list(range(1, 10)))
    for seq in (a, b):  # both placed before either commits: no reuse possible
        assert kv.match_prefix(seq) == 0
        assert kv.allocate_slots(seq, 9)
    for seq in (a, b):
        seq.num_computed_tokens = 9
        kv.commit(seq)
    assert len(kv.prefix_cache) == 2  # a's two full blocks; b's duplicates were not registered
    kv.check_invariants()
    kv.free(a)
    kv.free(b)
    assert kv.num_free_blocks == 8 and kv.allocator.num_free == 6  # a's full blocks stay cached
    kv.check_invariants()


def test_eviction_takes_unreferenced_cached_blocks_tail_first_and_never_referenced_ones():
    kv = KVCacheManager(4, BS)
    a = computed(kv, Sequence("a", list(range(1, 13))))  # three full blocks cached, 1 block free
    head, middle, tail = a.block_table
    kv.free(a)
    assert kv.allocator.num_free == 1 and kv.num_free_blocks == 4
    live = Sequence("live", [*range(1, 5), 99])
    assert kv.match_prefix(live) == 4  # takes block `head` back into use
    assert kv.allocate_slots(live, 1)  # uses the one truly free block
    grower = Sequence("grower", [50] * 8)
    assert kv.allocate_slots(grower, 8)  # needs two: evicts the tail, then the middle
    assert sorted(grower.block_table) == sorted([tail, middle])
    assert not kv.prefix_cache.holds(tail) and not kv.prefix_cache.holds(middle)
    assert kv.prefix_cache.holds(head)
    assert not kv.allocate_slots(Sequence("x", [1]), 1)  # only referenced blocks left: no eviction
    kv.check_invariants()


def test_prefix_cache_off_means_no_reuse_and_blocks_go_straight_back():
    kv = KVCacheManager(4, BS, enable_prefix_cache=False)
    kv.free(computed(kv, Sequence("a", list(range(1, 10)))))
    assert len(kv.prefix_cache) == 0 and kv.allocator.num_free == 4
    assert kv.match_prefix(Sequence("b", list(range(1, 10)))) == 0


def test_partial_commits_register_blocks_as_they_fill():
    kv = KVCacheManager(8, BS)
    seq = Sequence("a", list(range(1, 12)))
    kv.allocate_slots(seq, 6)
    seq.num_computed_tokens = 6
    kv.commit(seq)
    assert len(kv.prefix_cache) == 1
    kv.allocate_slots(seq, 5)
    seq.num_computed_tokens = 11
    kv.commit(seq)
    assert len(kv.prefix_cache) == 2
    assert first_blocks(kv, list(range(1, 9))) == seq.block_table[:2]


def test_check_invariants_catches_a_block_listed_without_a_reference():
    kv = KVCacheManager(4, BS)
    a = Sequence("a", [1, 2, 3])
    kv.allocate_slots(a, 3)
    a.block_table.append(3)  # a bug: a block used without allocating it
    with pytest.raises(AssertionError, match="block 3"):
        kv.check_invariants()


def test_check_invariants_catches_a_leaked_block():
    kv = KVCacheManager(4, BS)
    a = Sequence("a", [1, 2, 3])
    kv.allocate_slots(a, 3)
    a.block_table = []  # dropped without free(): the block is lost
    with pytest.raises(AssertionError):
        kv.check_invariants()
