"""Run 21, calls 1-2: the TMA prefill before and after the ragged-tile fix, same process (kept as it ran).

It imports copies of kernels/prefill_attention.py cut before its register(Op(...)) call: _prefill_old from
commit e2f711c, _prefill_a/_b/_c the three ragged-tail variants of run21_notes.md section 1 (c shipped).
Call 1 compared old with a only. ``bench/impl_ab.py`` now does this job with registered variants.
"""
import csv
import sys

import torch

import importlib
from bench.timing import time_each
from kernels._prefill_cases import make_inputs

B = torch.bfloat16


def case(seqlens, D, Hq, Hkv, causal, prefix=None):
    return {"seqlens": tuple(seqlens), "prefixes": prefix and tuple(prefix), "q_heads": Hq, "kv_heads": Hkv,
            "head_dim": D, "block_size": 16, "dtype": B, "causal": causal}


SHAPES = [
    ("16x1024 D128 32/32 causal", case([1024] * 16, 128, 32, 32, True)),
    ("4x4096 D128 32/32 causal", case([4096] * 4, 128, 32, 32, True)),
    ("1x16384 D128 32/32 causal", case([16384], 128, 32, 32, True)),
    ("8x2048 D128 32/8 causal", case([2048] * 8, 128, 32, 8, True)),
    ("4x4096 D128 32/32 noncausal", case([4096] * 4, 128, 32, 32, False)),
    ("4x4096 D64 16/16 causal", case([4096] * 4, 64, 16, 16, True)),
    ("8x512+4096 D128 32/8 causal", case([512] * 8, 128, 32, 8, True, [4096] * 8)),
    ("16x1000 D128 32/32 causal ragged", case([1000] * 16, 128, 32, 32, True)),
    ("4x4000 D128 32/32 causal ragged", case([4000] * 4, 128, 32, 32, True)),
    ("1x16000 D128 32/32 causal ragged", case([16000], 128, 32, 32, True)),
    ("4x4000 D128 32/32 noncausal ragged", case([4000] * 4, 128, 32, 32, False)),
    ("mixed D128 32/8 causal ragged", case([3000, 500, 1200, 7000, 77, 2049, 130, 4095], 128, 32, 8, True)),
    ("16x1000 D64 14/2 causal ragged", case([1000] * 16, 64, 14, 2, True)),
    ("64x200 D64 14/2 causal ragged", case([200] * 64, 64, 14, 2, True)),
]


def flops(c):
    f = 0
    for i, s in enumerate(c["seqlens"]):
        p = c["prefixes"][i] if c["prefixes"] else 0
        keys = p * s + (s * (s + 1) / 2 if c["causal"] else s * s)
        f += 4 * keys * c["q_heads"] * c["head_dim"]
    return f


MODS = {}


def main(out):
    for name in ("old", "a", "b", "c"):
        MODS[name] = importlib.import_module(f"_prefill_{name}")
    rows = []
    for label, c in SHAPES:
        gen = torch.Generator(device="cuda").manual_seed(0)
        sets = [make_inputs(c, "cuda", gen) for _ in range(2)]
        ref = MODS["old"].prefill_attention(**sets[0])
        row = dict(shape=label)
        fns = [m.prefill_attention for m in MODS.values()] * 2
        ts, method = time_each(fns, sets)
        n = len(MODS)
        tf = flops(c)
        for i, (name, m) in enumerate(MODS.items()):
            t = min(ts[i], ts[i + n])
            row[f"{name}_ms"] = round(t, 4)
            row[f"{name}_over_old"] = round(t / min(ts[0], ts[n]), 4)
            row[f"{name}_tflops"] = round(tf / t / 1e9, 1)
            row[f"{name}_same_bits"] = bool(torch.equal(ref, m.prefill_attention(**sets[0])))
        row["method"] = method
        print(row, flush=True)
        rows.append(row)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main(sys.argv[1])
