"""Ad-hoc: the split-K decode at K = 896 across N, one config pinned, to find why 1152 x 896 runs fast.

Variants per shape: cuBLAS; the 16-row tile 16/128/2w/5s and the 64/128/4w/4s tile, each one chunk, with
PDL as shipped ("start"), in the "after_wait" mode and off; rotations of weight copies made by clone(),
carved back to back from one buffer, or carved at 2 MiB boundaries; and a warm (one set) timing.
"""
import csv
import sys

import torch

from bench.timing import input_sets_for, time_each
from kernels import pdl
from kernels.linear_decode import linear_decode_2d

C16 = dict(BLOCK_N=16, BLOCK_K=128, num_warps=2, num_stages=5)
C64 = dict(BLOCK_N=64, BLOCK_K=128, num_warps=4, num_stages=4)
L2 = torch.cuda.get_device_properties(0).L2_cache_size


def sets_for(M, N, K, layout):
    w0 = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.05
    nbytes = w0.numel() * 2
    n = input_sets_for(nbytes, L2)
    if layout == "warm":
        n = 1
    if layout in ("clone", "warm"):
        ws = [w0.clone() for _ in range(n)]
    else:
        stride = nbytes if layout == "packed" else -(-nbytes // (2 << 20)) * (2 << 20)
        buf = torch.empty(stride * n + (2 << 20), dtype=torch.uint8, device="cuda")
        base = (-buf.data_ptr()) % (2 << 20)
        ws = []
        for i in range(n):
            v = buf[base + i * stride: base + i * stride + nbytes].view(torch.bfloat16).view(N, K)
            v.copy_(w0)
            ws.append(v)
    return [{"x": torch.randn(M, K, device="cuda", dtype=torch.bfloat16), "w": w} for w in ws]


def with_pdl(fn, mode):
    def run(x, w):
        old_e, old_s = pdl.ENABLED, pdl.SIGNAL
        pdl.ENABLED = mode != "off"
        pdl.SIGNAL = "start" if mode == "off" else mode
        try:
            return fn(x, w)
        finally:
            pdl.ENABLED, pdl.SIGNAL = old_e, old_s
    return run


rows = []
K = 896
plan = [(16, N, "clone") for N in (640, 768, 896, 1024, 1152, 1280, 1408, 1536, 1792, 2048)]
plan += [(16, N, lay) for N in (896, 1152, 2048) for lay in ("packed", "aligned2m", "warm")]
plan += [(4, N, "clone") for N in (896, 1152, 2048)]
for M, N, layout in plan:
    sets = sets_for(M, N, K, layout)
    labels = ["cublas"]
    fns = [lambda x, w: x @ w.T]
    for name, c in (("16/128/2w/5s", C16), ("64/128/4w/4s", C64)):
        for mode in ("start", "after_wait", "off"):
            labels.append(f"{name} pdl={mode}")
            fns.append(with_pdl(lambda x, w, c=c: linear_decode_2d(x, w, None, config=c, k_chunk=1024), mode))
    ref = sets[0]["x"].float() @ sets[0]["w"].float().T
    for f in fns[1:]:
        assert (f(**sets[0]).float() - ref).abs().max().item() < 0.05
    ts, how = time_each(fns, sets)
    print(f"M={M} N={N} {layout} sets={len(sets)} ptr%2M={sets[-1]['w'].data_ptr() % (2 << 20)}: "
          + " | ".join(f"{lab} {t * 1e3:.2f}" for lab, t in zip(labels, ts, strict=True)), flush=True)
    for lab, t in zip(labels, ts, strict=True):
        rows.append(dict(M=M, N=N, K=K, layout=layout, sets=len(sets), variant=lab, us=round(t * 1e3, 3),
                         vs_cublas=round(ts[0] / t, 3), timing=how))
    del sets
    torch.cuda.empty_cache()
with open(sys.argv[1], "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=list(rows[0]))
    wr.writeheader()
    wr.writerows(rows)
