"""How paged decode (kernels/paged_decode.py) cuts each sequence's context into splits: the split policy.

The settings here are data, read at each launch (``kernels._decode_splits.MAX_SPLITS=...`` in a
bench/decode_profile.py variant changes them).

A fixed size, given: with ``split_size`` passed, a sequence's partition depends only on that size, not on
its own length or on the other sequences in the batch, so results are batch-invariant whenever the split
size is the same. An engine that needs bitwise batch invariance passes one constant ``split_size``. The
result depends on the split size only through rounding (tested).

Fitted to each context, by default (``kernels.paged_decode.FIT_SPLITS_TO_CONTEXT``): the grid's split
count comes from the launch's context bound, but each sequence spreads its own C tokens over those
splits, in whole ``SPLIT_ALIGN``-token tiles (:func:`split_len`). A decode graph captured for an
8192-token bound then decodes a 200-token context with four one-tile programs per KV head, not one
program walking 256 tokens while the others exit; at the bound the size is the policy's own.

How many splits (:func:`choose_split_size`, from batch, KV heads, max context and the SM count). Decode
moves bytes and nothing else, so the question is how many bytes each SM has in flight, start to end:

- one wave: a launch that fits the card at once has no tail wave (on an H200, 512 programs where 396 fit
  at once ran 1.2x slower than 256 longer ones). How many programs fit an SM is the tile's business, so
  there are two shapes of launch, each with its own tile (:func:`wide_launch` tells them apart):
  - long splits, ``WIDE_PROGRAMS_PER_SM`` (4) programs per SM, taken whenever that still leaves at least
    ``LONG_SPLIT`` (512) tokens a split and four programs an SM fit the pipelined tile of one-split launches
    (``kernels._decode_tiles.TILES``; ``fits_wide``: bf16 at head dim 64 and 128 on NVIDIA), whose software
    pipeline pays off over a long loop;
  - short splits, ``PROGRAMS_PER_SM`` (2) per SM otherwise: the split tile (``SPLIT_TILES``). At D = 128 it
    is one 128-token tile a trip with no software pipeline (``num_stages=1``), so a 128- or 256-token split
    issues all its loads at once, where the pipelined 64-token tiles kept about one tile in flight (the
    pipeliner puts the block-table load a stage before the K/V loads that use it); its registers fit two
    programs an SM;
- at least ``MIN_SPLIT`` (128) tokens per split: shorter programs spend their time starting up;
- at most ``MAX_SPLITS`` (128) splits: the reduce combines up to 256 in one step (kernels/_decode_combine.py);
- the size rounded up to whole ``SPLIT_ALIGN`` (64)-token tiles.

H200, run 18 (bench/results/NVIDIA_H200/run18_notes.md), short splits: at batch 1, 128 splits of 256 tokens
(14 query / 2 KV heads, 32k context) took 15.1 us against 21.1 for 64 pipelined splits of 512, and 32
splits of 128 tokens (4k context) 10.4 against 12.6 (32 / 8 heads), 7.5 against 9.9 (14 / 2). Long splits,
run 19 (run19_notes.md; this rule against short splits only, in one process): 32 / 8 heads at batch 1,
32k, 39.3 against 41.9 us; batch 8, 4k, 38.7 against 41.5; batch 8, 32k, 250.7 against 273.9; batch 32,
4k, 129.8 against 142.1; 14 / 2 heads at batch 8, 32k, 70.6 against 73.0. Nowhere slower. Long splits of
256 tokens instead of 512 (``LONG_SPLIT``) won at one shape and lost at another, by 2% each.
"""

from __future__ import annotations

from kernels._triton import tl, triton
from kernels.device import num_sms

PROGRAMS_PER_SM, MIN_SPLIT, MAX_SPLITS, SPLIT_ALIGN = 2, 128, 128, 64
WIDE_PROGRAMS_PER_SM, LONG_SPLIT = 4, 512  # long splits: four programs an SM (see above)
COUNT_ALIGN = 16  # an explicit num_splits rounds its split size to this (the interpreter's tile)


@triton.jit
def split_len(ctx, split_size, max_splits, FIT: tl.constexpr, ALIGN: tl.constexpr):
    """Tokens per split of a sequence with ``ctx`` tokens: the launch's ``split_size``, or (FIT) the fewest
    whole ALIGN-token tiles that spread ``ctx`` over the launch's ``max_splits`` (never more splits than the
    grid has: ctx <= the bound the grid was sized for)."""
    if FIT:  # noqa: SIM108  (a compile-time branch on a constexpr, kept as a statement)
        size = tl.maximum(tl.cdiv(tl.cdiv(ctx, max_splits), ALIGN), 1) * ALIGN
    else:
        size = split_size
    return size


def choose_split_size(batch: int, num_kv_heads: int, max_context_len: int, sms: int | None = None,
                      wide: bool = True) -> int:
    """Tokens per split for a launch of ``batch`` sequences of up to ``max_context_len`` tokens.

    ``batch * num_kv_heads`` programs exist per split. The split count is the largest that keeps
    ``programs * splits`` within one wave -- ``WIDE_PROGRAMS_PER_SM * sms`` if ``wide`` (four programs an SM
    fit the pipelined tile: ``kernels._decode_tiles.fits_wide``) and the splits then still hold
    ``LONG_SPLIT`` tokens, else ``PROGRAMS_PER_SM * sms`` -- with splits of at least ``MIN_SPLIT`` tokens
    and at most ``MAX_SPLITS`` splits; batches that fill the card alone get one split (no reduce). The
    size is rounded up to whole ``SPLIT_ALIGN``-token tiles. A researcher can call this with another
    ``sms`` or pass ``split_size``/``num_splits`` to the op to override it.
    """
    sms = num_sms() if sms is None else sms
    programs = max(1, batch * num_kv_heads)
    size = _one_wave_size(programs, WIDE_PROGRAMS_PER_SM * sms, max_context_len) if wide else 0
    return size if size >= LONG_SPLIT else _one_wave_size(programs, PROGRAMS_PER_SM * sms, max_context_len)


def _one_wave_size(programs: int, slots: int, max_context_len: int) -> int:
    splits = min(slots // programs, max_context_len // MIN_SPLIT, MAX_SPLITS)
    size = -(-max(max_context_len, 1) // max(1, splits))
    return -(-size // SPLIT_ALIGN) * SPLIT_ALIGN


def wide_launch(programs: int, sms: int | None = None) -> bool:
    """Does a split launch of ``programs`` programs need more than ``PROGRAMS_PER_SM`` an SM? Then, where four
    programs an SM fit it, it takes the pipelined tile (``TILES``), not the split tile (``SPLIT_TILES``)."""
    return programs > PROGRAMS_PER_SM * (num_sms() if sms is None else sms)


def split_size_for(batch, num_kv_heads, max_context, num_splits, split_size, sms: int | None = None,
                   wide: bool = True) -> int:
    """Tokens per split of a launch: ``split_size`` if given, else cut from ``num_splits`` (whole
    ``COUNT_ALIGN``-token tiles), else :func:`choose_split_size` (``sms``, the launch device's count, and
    ``wide`` passed on); bad values raise ValueError."""
    if split_size is not None:
        if not isinstance(split_size, int) or split_size < 1:
            raise ValueError(f"paged_decode_attention: split_size must be a positive int, got {split_size!r}")
        return split_size
    if num_splits is not None:
        if not isinstance(num_splits, int) or num_splits < 1:
            raise ValueError(f"paged_decode_attention: num_splits must be a positive int, got {num_splits!r}")
        size = -(-max(max_context, 1) // num_splits)
        return -(-size // COUNT_ALIGN) * COUNT_ALIGN
    return choose_split_size(batch, num_kv_heads, max_context, sms, wide)
