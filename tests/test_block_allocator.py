"""BlockAllocator: reference counts, parking, and the errors that catch engine bugs."""

from __future__ import annotations

import pytest

from engine.kv.block_allocator import BlockAllocator, BlockAllocatorError, NoFreeBlocksError

pytestmark = pytest.mark.engine


def test_allocates_every_block_once_then_reports_exhaustion():
    alloc = BlockAllocator(5)
    blocks = [alloc.allocate() for _ in range(5)]
    assert sorted(blocks) == [0, 1, 2, 3, 4]
    assert alloc.num_free == 0
    assert all(alloc.ref_count(b) == 1 for b in blocks)
    with pytest.raises(NoFreeBlocksError, match="5 KV-cache blocks"):
        alloc.allocate()


def test_block_returns_to_free_list_only_when_last_reference_drops():
    alloc = BlockAllocator(3)
    block = alloc.allocate()
    assert alloc.incref(block) == 2
    assert alloc.incref(block) == 3
    assert alloc.decref(block) == 2
    assert alloc.decref(block) == 1
    assert not alloc.is_free(block) and alloc.num_free == 2
    assert alloc.decref(block) == 0
    assert alloc.is_free(block) and alloc.num_free == 3
    alloc.check_invariants()


def test_double_free_raises():
    alloc = BlockAllocator(2)
    block = alloc.allocate()
    alloc.decref(block)
    with pytest.raises(BlockAllocatorError, match="double free"):
        alloc.decref(block)
    assert alloc.num_free == 2  # the failed call changed nothing


def test_referencing_a_free_block_raises():
    alloc = BlockAllocator(2)
    with pytest.raises(BlockAllocatorError, match="free"):
        alloc.incref(1)


@pytest.mark.parametrize("bad_id", [-1, 4, 2.0, None])
def test_out_of_range_ids_raise(bad_id):
    alloc = BlockAllocator(4)
    with pytest.raises(BlockAllocatorError, match="outside"):
        alloc.ref_count(bad_id)


@pytest.mark.parametrize("bad", [0, -3, 1.5])
def test_pool_size_must_be_positive(bad):
    with pytest.raises(ValueError, match="num_blocks"):
        BlockAllocator(bad)


def test_parked_block_is_neither_free_nor_referenced_until_revived_or_released():
    alloc = BlockAllocator(3)
    block = alloc.allocate()
    assert alloc.decref(block, park=True) == 0
    assert alloc.is_parked(block) and not alloc.is_free(block)
    assert alloc.num_free == 2
    with pytest.raises(BlockAllocatorError, match="parked"):
        alloc.decref(block)  # parked, not referenced: a second free is still a double free
    assert alloc.incref(block) == 1  # a prefix-cache hit revives it
    assert not alloc.is_parked(block)
    with pytest.raises(BlockAllocatorError, match="not parked"):
        alloc.release_parked(block)
    alloc.decref(block, park=True)
    alloc.release_parked(block)
    assert alloc.is_free(block) and alloc.num_free == 3
    alloc.check_invariants()


def test_freed_blocks_are_reused():
    alloc = BlockAllocator(2)
    first, second = alloc.allocate(), alloc.allocate()
    alloc.decref(first)
    assert alloc.allocate() == first
    assert alloc.ref_count(second) == 1
