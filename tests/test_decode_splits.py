"""How paged decode cuts its launches: the split policy (kernels/_decode_splits.py), the tile each kind of
launch takes (kernels/_decode_tiles.py) and the early read of settled KV (``paged_decode._prefetch``). The
answers these launches give are tested in tests/test_paged_decode.py."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import _decode_splits, _decode_tiles, paged_decode
from kernels._decode_splits import (
    LONG_SPLIT,
    MAX_SPLITS,
    MIN_SPLIT,
    PROGRAMS_PER_SM,
    SPLIT_ALIGN,
    WIDE_PROGRAMS_PER_SM,
    choose_split_size,
)
from kernels.paged_decode import paged_decode_attention

pytestmark = pytest.mark.paged_decode_attention


def test_choose_split_size_fills_the_card_in_one_wave():
    sms = 132
    for batch, kv_heads, ctx in [(1, 8, 32768), (1, 8, 8192), (1, 2, 32768), (8, 2, 4096), (8, 8, 32768),
                                 (64, 2, 16384), (3, 5, 1000), (1, 8, 16384), (32, 8, 4096)]:
        size = choose_split_size(batch, kv_heads, ctx, sms)
        splits = -(-ctx // size)
        assert size % SPLIT_ALIGN == 0 and size >= MIN_SPLIT
        assert splits <= MAX_SPLITS
        per_sm = WIDE_PROGRAMS_PER_SM if size >= LONG_SPLIT else PROGRAMS_PER_SM
        assert batch * kv_heads * splits <= per_sm * sms  # one wave of the launch's tile: no tail
    assert choose_split_size(1, 8, 32768, sms) == 512      # 64 long splits: 512 programs, four an SM
    assert choose_split_size(1, 8, 16384, sms) == 512      # four an SM would cut 256: 32 splits, two an SM
    assert choose_split_size(8, 8, 4096, sms) == 512       # 8 long splits: 512 programs
    assert choose_split_size(1, 2, 32768, sms) == 256      # 128 splits: capped by MAX_SPLITS
    assert choose_split_size(1, 2, 4096, sms) == 128       # 32 splits: capped by MIN_SPLIT
    assert choose_split_size(8, 2, 4096, sms) == 256       # 16 splits: 256 programs
    assert choose_split_size(256, 8, 4096, sms) >= 4096    # big batches: one split, no reduce
    assert choose_split_size(1, 2, 100, sms) >= 100        # short contexts: one split
    # Where four programs an SM do not fit the pipelined tile: two an SM, always.
    assert choose_split_size(1, 8, 32768, sms, wide=False) == 1024  # 32 splits: 256 programs
    assert choose_split_size(8, 8, 4096, sms, wide=False) == 1024   # 4 splits: 256 programs


@settings(max_examples=500)  # pure host arithmetic: many cases cost well under a second
@given(batch=st.integers(1, 512), kv_heads=st.integers(1, 16), ctx=st.integers(1, 1 << 17),
       sms=st.integers(8, 304), wide=st.booleans())
def test_the_split_policy_keeps_its_rules_everywhere(batch, kv_heads, ctx, sms, wide):
    """Whatever the launch: whole tiles, at most MAX_SPLITS splits, splits of MIN_SPLIT tokens unless the
    context is shorter, one wave for the tile the launch takes, and long splits only where ``wide``."""
    size = choose_split_size(batch, kv_heads, ctx, sms, wide=wide)
    splits = -(-ctx // size)
    assert size % SPLIT_ALIGN == 0 and splits <= MAX_SPLITS
    assert size >= min(MIN_SPLIT, -(-ctx // SPLIT_ALIGN) * SPLIT_ALIGN)
    if splits > 1:
        programs = batch * kv_heads * splits
        goes_wide = _decode_splits.wide_launch(programs, sms)
        assert not goes_wide or (wide and size >= LONG_SPLIT)
        assert programs <= (WIDE_PROGRAMS_PER_SM if goes_wide else PROGRAMS_PER_SM) * sms


def test_only_tiles_that_four_programs_an_sm_fit_go_wide(monkeypatch):
    """``fits_wide`` reads WIDE_TILES through the same head-dim lookup as the tiles (NVIDIA: bf16 at 64, 128)."""
    monkeypatch.setattr(_decode_tiles, "interpreting", lambda: False)
    monkeypatch.setattr(_decode_tiles, "vendor", lambda: "cuda")
    assert [_decode_tiles.fits_wide(d, 2) for d in (32, 64, 128, 256)] == [True, True, True, False]
    assert not _decode_tiles.fits_wide(128, 4)  # fp32: two programs an SM
    monkeypatch.setattr(_decode_tiles, "vendor", lambda: "hip")
    assert not _decode_tiles.fits_wide(128, 2)  # not measured on AMD


def test_the_tiles_said_to_fit_four_programs_an_sm_do():
    """WIDE_TILES names the one-split tiles that four programs an SM fit. Compiled for sm_90 (no GPU needed),
    none of them holds fewer (``bench.compile_attention``'s per-SM count), so editing a tile past that fails
    here. In a subprocess: this process interprets."""
    from tests.aot_helpers import run_sm90

    run = run_sm90("bench.compile_attention", "wide")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("decode ")]
    assert len(lines) == 2 * sum(len(dims) for dims in _decode_tiles.WIDE_TILES["cuda"].values()), run.stdout
    assert all(" per SM " in line and " FITS " not in line for line in lines), run.stdout


class _Picked(Exception):
    """Raised by the spy below once the launcher has picked its tile: nothing is launched."""


@pytest.mark.parametrize("kwargs, ctx, split_tile", [
    ({}, 4096, False),                # the policy's long splits: more than two programs an SM
    ({}, 1024, True),                 # the policy's short splits: two an SM at most
    ({"split_size": 512}, 4096, True),  # a given size keeps the split tile, whatever the batch
    ({"num_splits": 64}, 4096, False),  # a wide count: the tile four programs an SM fit
], ids=["long", "short", "split_size", "num_splits"])
def test_wide_split_launches_take_the_pipelined_tile(monkeypatch, kwargs, ctx, split_tile):
    """The tile follows the launch's width (kernels._decode_splits.wide_launch), except under a given split_size."""
    picked = []

    def spy(d_pad, itemsize, split=False):
        picked.append(split)
        raise _Picked

    monkeypatch.setattr(paged_decode, "pick_tile", spy)
    monkeypatch.setattr(paged_decode, "device_sms", lambda device: 4)  # the launch reads its device's count
    q = torch.randn(1, 4, 32)
    cache = torch.randn(ctx // 16, 16, 2, 32)
    table = torch.arange(ctx // 16, dtype=torch.int32)[None]
    with pytest.raises(_Picked):
        paged_decode_attention(q, cache, cache, table, torch.tensor([ctx], dtype=torch.int32), **kwargs)
    assert picked == [split_tile]
    # Where four programs an SM do not fit the pipelined tile, every split launch takes the split tile.
    monkeypatch.setattr(paged_decode, "fits_wide", lambda d_pad, itemsize: False)
    with pytest.raises(_Picked):
        paged_decode_attention(q, cache, cache, table, torch.tensor([ctx], dtype=torch.int32), **kwargs)
    assert picked == [split_tile, True]


def test_the_settled_tile_is_read_early_only_where_it_was_measured_to_pay(monkeypatch):
    """The fresh-tokens promise reads the first tile before the PDL wait, except in a split launch whose
    splits span several tiles of an unpipelined tile (paged_decode._prefetch)."""
    unpipelined, pipelined = dict(BLOCK_N=128, num_stages=1), dict(BLOCK_N=64, num_stages=5)
    assert paged_decode._prefetch(1, unpipelined, 128, direct=False)       # one tile a split
    assert not paged_decode._prefetch(1, unpipelined, 256, direct=False)   # two tiles, unpipelined
    assert paged_decode._prefetch(1, pipelined, 1024, direct=False)
    assert paged_decode._prefetch(1, unpipelined, 4096, direct=True)       # one split a sequence
    assert not paged_decode._prefetch(None, unpipelined, 128, direct=False)  # no promise
    assert paged_decode._prefetch(1, dict(BLOCK_N=16), 48, direct=False)  # the interpreter's tile: no stages
    monkeypatch.setattr(paged_decode, "PREFETCH_SETTLED", False)
    assert not paged_decode._prefetch(1, unpipelined, 128, direct=False)
