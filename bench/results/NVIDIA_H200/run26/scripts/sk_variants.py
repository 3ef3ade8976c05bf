"""Run 26, call 3 (tree 4937143): where the stream-K phase's time goes.

Variants of kernels/linear_streamk.py made by text edits, written beside this file and imported, each timed
at two pinned configs: ``default``; ``default-nosk`` (fixup_iters so high that nothing is split: the
data-parallel phase alone); ``nofix`` (partials stored, never summed: no atomic, no read-back; wrong
results); ``nostore`` (not even stored); ``forloop`` (the ``while`` over a range's tiles as a guarded
``for``). Usage: ``python3 sk_variants.py OUT.csv`` from the repository root.
"""
import csv
import importlib
import os
import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from kernels.linear_prefill import linear_persistent_2d

HERE = os.path.dirname(os.path.abspath(__file__))
WHILE = "    while it < end:\n"
NOFIX = [('            arrived = tl.atomic_add(count_ptr + t, 1, sem="acq_rel")\n'
          "            last = arrived == last_owner - first_owner\n",
          "            last = k_lo < 0\n")]
STORE = "            tl.store(ws_ptr + slot.to(tl.int64) * (BLOCK_M * BLOCK_N) + slot_offs, acc"
NOSTORE = [*NOFIX, (STORE + ")\n", STORE + ", mask=slot_offs < 0)\n")]
CFGS = [dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3, FLATTEN=True),
        dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4, FLATTEN=True)]
SHAPES = [(4096, 4608, 3584), (2048, 4608, 3584), (4096, 3584, 3584), (640, 4608, 3584), (128, 4096, 14336)]


def load(name: str, text: str):
    with open(os.path.join(HERE, f"skv_{name}.py"), "w") as f:
        f.write(text)
    sys.path.insert(0, HERE)
    return importlib.import_module(f"skv_{name}")


def edited(source: str, edits) -> str:
    for a, b in edits:
        assert a in source, a[:60]
        source = source.replace(a, b)
    return source


def guarded_for(source: str) -> str:
    """The while loop as ``for _piece in range(most pieces a range can touch): if it < end:``."""
    i = source.index(WHILE) + len(WHILE)
    j = source.index("    # Data-parallel phase")
    body = "\n".join(("  " + line if line.strip() else line) for line in source[i:j].split("\n"))
    head = source[:i].replace(WHILE, "    for _piece in range(0, (base + 1 + iters - 1) // iters + 1):\n"
                                      "      if it < end:\n")
    return head + body + source[j:]


def ms(fn):
    return do_bench(fn, warmup=10, rep=60, return_mode="median")


def main():
    with open("kernels/linear_streamk.py") as f:
        source = f.read()
    mods = {name: load(name, edited(source, edits)) for name, edits in
            (("default", []), ("nofix", NOFIX), ("nostore", NOSTORE))}
    mods["forloop"] = load("forloop", guarded_for(source))
    rows = []
    for M, N, K in SHAPES:
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) / K**0.5
        ref = F.linear(x, w)
        cub = ms(lambda x=x, w=w: F.linear(x, w))
        for cfg in CFGS:
            t = ms(lambda x=x, w=w, cfg=cfg: linear_persistent_2d(x, w, None, config=cfg))
            rows.append(dict(M=M, N=N, K=K, cfg=cfg["BLOCK_N"], kernel="persistent", us=t * 1e3, vs_cublas=cub / t))
            for name, mod in mods.items():
                for fix in (12, 10**6) if name == "default" else (12,):
                    def fn(x=x, w=w, cfg=cfg, mod=mod, fix=fix):
                        return mod.linear_streamk_2d(x, w, None, config=cfg, fixup_iters=fix)
                    try:
                        err = (fn().float() - ref.float()).abs().max().item()
                        t = ms(fn)
                    except Exception as e:  # a variant that fails to compile is reported, the others still run
                        print(name, type(e).__name__, str(e)[:300], flush=True)
                        continue
                    rows.append(dict(M=M, N=N, K=K, cfg=cfg["BLOCK_N"], kernel=name + ("" if fix == 12 else "-nosk"),
                                     us=t * 1e3, vs_cublas=cub / t, err=err))
            for r in rows[-6:]:
                print(r, flush=True)
        with open(sys.argv[1], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["M", "N", "K", "cfg", "kernel", "us", "vs_cublas", "err"])
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
