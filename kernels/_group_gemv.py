"""What the 16-byte-vector GGUF GEMVs share (``kernels._q4_0_group_gemv``, ``kernels._q4_k_group_gemv``).

Both read 144-byte units of a weight row (eight Q4_0 blocks, one Q4_K super-block) as nine 16-byte vectors,
one unit of one row per thread, and x as int32 words of two 16-bit values. Their tiles are data:
(BLOCK_N, num_warps, the most x rows it compiles for without spilling), per vendor; ROWS is in the
autotuner's key and ``GroupTiles.prune`` keeps the tiles that fit the launch's row count.
"""

from __future__ import annotations

from kernels._triton import tl, triton
from kernels.device import interpreting, vendor


@triton.jit
def _split4(v):
    """The four [...] columns of a [..., 4] tile whose last dim is one thread's 16-byte vector."""
    a, b = tl.split(tl.reshape(v, (v.shape[0], v.shape[1], 2, 2)))  # a: words 0 and 2, b: 1 and 3
    w0, w2 = tl.split(a)
    w1, w3 = tl.split(b)
    return w0, w1, w2, w3


class GroupTiles:
    """A kernel's tiles as data: ``configs[vendor]`` for the autotuner, each with the most x rows it fits.

    ``fp16_most_rows``: the most x rows the fp16 unpacking fits in (it takes more registers than bf16's).
    """

    def __init__(self, tiles: dict[str, list[tuple[int, int, int]]], stages: dict[str, int], fp16_most_rows: int):
        self.fp16_most_rows = fp16_most_rows
        self.configs = {
            v: [dict(BLOCK_N=bn, GROUPS_PER_ITER=1, num_warps=warps, num_stages=stages[v]) for bn, warps, _ in ts]
            for v, ts in tiles.items()
        }
        self._most_rows = {v: {(bn, warps): rows for bn, warps, rows in ts} for v, ts in tiles.items()}

    def most_rows(self, config: dict, vendor: str = "cuda") -> int:
        """The largest ROWS a config of ``configs[vendor]`` is tuned for (4 for a tile not listed)."""
        return self._most_rows[vendor].get((config["BLOCK_N"], config["num_warps"]), 4)

    def prune(self, configs, named_args, **kwargs):
        """The tiles that compile for this launch's ROWS without spilling (the first one fits every ROWS)."""
        rows = kwargs.get("ROWS", named_args.get("ROWS", 1))
        which = "cuda" if interpreting() else vendor()
        fits = [c for c in configs if self.most_rows({**c.kwargs, "num_warps": c.num_warps}, which) >= rows]
        return fits or configs[:1]
