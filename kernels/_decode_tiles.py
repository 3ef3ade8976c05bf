"""Launch tiles of the paged decode kernels (``kernels.paged_decode``): data, looked up at launch."""

from __future__ import annotations

from kernels.device import interpreting, vendor

# Two tiles per vendor and padded head dim: SPLIT_TILES for launches cut into short splits (at most two
# programs per SM, each a short loop: the larger tile keeps more bytes in flight per program), TILES for
# launches with one split per sequence (large batches, several waves: 32-token tiles let four programs share
# an SM, so 512 programs fit one wave of 528 on an H100/H200 where 64-token tiles fit 396) and for split
# launches of more than two programs an SM (long splits; kernels/_decode_splits.py, ``wide_launch``).
# Measured on an NVIDIA H200 (bench/results/NVIDIA_H200/run6/decode_notes.md): bf16 D=128 in full, the other
# entries against the previous 3-stage tiles on two shapes each. A fixed table rather than triton.autotune
# for the reason given in kernels/prefill_attention.py. The interpreter runs 16-token tiles (least CPU time
# per program at the test shapes).

TILES = {  # vendor -> element size in bytes -> padded head dim -> tile (one split per sequence)
    "cuda": {
        2: {
            64: dict(BLOCK_N=64, num_warps=4, num_stages=5),
            128: dict(BLOCK_N=32, num_warps=4, num_stages=5),
            256: dict(BLOCK_N=32, num_warps=4, num_stages=5),
        },
        4: {
            128: dict(BLOCK_N=32, num_warps=4, num_stages=3),  # 5 stages: 4% slower here (546 vs 526 us)
            256: dict(BLOCK_N=16, num_warps=8, num_stages=5),  # 4 warps spill registers here
        },
    },
    "hip": {  # not measured yet
        2: {128: dict(BLOCK_N=64, num_warps=4, num_stages=1), 256: dict(BLOCK_N=32, num_warps=4, num_stages=1)},
        4: {128: dict(BLOCK_N=32, num_warps=4, num_stages=1), 256: dict(BLOCK_N=16, num_warps=4, num_stages=1)},
    },
    "interpreter": {2: {256: dict(BLOCK_N=16)}, 4: {256: dict(BLOCK_N=16)}},
}
SPLIT_TILES = {  # the same keys: the tile of launches cut into splits
    "cuda": {
        2: {
            64: dict(BLOCK_N=64, num_warps=4, num_stages=5),
            # One unpipelined 128-token tile a trip: a split of 128-256 tokens has all its loads in flight at
            # once (H200, bench/results/NVIDIA_H200/run18/attention_decode_splits_call5.csv; 64/4/5 before).
            128: dict(BLOCK_N=128, num_warps=4, num_stages=1),
            256: dict(BLOCK_N=32, num_warps=4, num_stages=5),
        },
        4: {
            128: dict(BLOCK_N=32, num_warps=4, num_stages=5),
            256: dict(BLOCK_N=16, num_warps=8, num_stages=5),
        },
    },
    "hip": TILES["hip"],
    "interpreter": TILES["interpreter"],
}
# Where a split launch may go wide, four programs an SM (kernels/_decode_splits.py): the TILES entries that
# four programs an SM fit, by vendor and element size. On sm_90 (``python -m bench.compile_attention decode``,
# its ``per SM`` column) bf16 D=64 takes 108 registers and 37 KB of shared memory a program, and D=128 126
# and 38 KB: four programs in the 64K registers and 228 KB. bf16 D=256 (207 registers) fits two, fp32 D=128
# (168) three. Not measured on AMD: none there. The interpreter has no occupancy; it takes every entry, so
# the CPU tests cover the wide path.
WIDE_TILES = {"cuda": {2: (64, 128)}, "hip": {}, "interpreter": {2: (256,), 4: (256,)}}


def _where() -> str:
    return "interpreter" if interpreting() else vendor()


def _key(table: dict, d_pad: int) -> int:
    return min((d for d in table if d >= d_pad), default=max(table))


def pick_tile(d_pad: int, itemsize: int, split: bool = False) -> dict:
    """The launch tile for a padded head dim and element size here (looked up at launch, never at import)."""
    table = (SPLIT_TILES if split else TILES)[_where()][min(itemsize, 4)]
    return dict(table[_key(table, d_pad)])


def fits_wide(d_pad: int, itemsize: int, where: str | None = None) -> bool:
    """Do four programs an SM fit the one-split tile of this head dim and element size (``WIDE_TILES``), here
    or on ``where`` ("cuda", "hip", "interpreter")?"""
    where, size = where or _where(), min(itemsize, 4)
    return _key(TILES[where][size], d_pad) in WIDE_TILES[where].get(size, ())
