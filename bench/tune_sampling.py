"""Time the sample op on one GPU against the sort-based torch sampler, torch.argmax and the copy ceiling.

Run from the repository root on a GPU machine::

    PYTHONPATH=. python3 bench/tune_sampling.py --out DIR [--explore]

In one process, so every number comes from the same card:

1. the copy bandwidth (bytes read + written of a 1 GiB device copy);
2. with ``--explore``: every CUDA config of the row-wise kernel, fixed (no autotuning), and a few chunk
   sizes and warp counts of the split kernels, on each benchmark case (``sampling_configs.csv``): what the
   config lists in kernels/sampling.py and kernels/_sampling_split.py are chosen from; with
   ``--crossover``: both paths forced at batch sizes 16..256 (``sampling_crossover.csv``), for MAX_ROWS;
3. the op's benchmark cases (``registry.get("sample").bench_cases()``): ``sample`` (the split kernels for
   the batches they take, the row-wise kernel for the others), the row-wise kernel alone
   (``sample_rowwise``), the baseline ("torch sort": the same pipeline with a full sort,
   ``sample_baseline``) and ``torch.argmax`` over the same logits, plus a mixed batch (half greedy, half
   sampled) (``sampling_bench.csv``).

Timing: ``triton.testing.do_bench`` medians (L2 cleared before every call), inputs rotated among enough
sets to exceed twice L2. Both the kernel and the baseline check for NaN logits and so synchronise once per
call, as the engine would. Speedup = baseline / kernel; argmax ratio = greedy-batch kernel / torch.argmax.

Notes (no GPU run yet; the first run should be ``--explore`` plus ``pytest -m sample``):

- Floor: the logits must be read once: B * V * 4 bytes (608 KB a row at V = 151936; 156 MB at B = 256,
  about 50 us at 3.3 TB/s). torch.argmax is one such read.
- The kernel reads a row once per pass: greedy and unfiltered rows 1 pass; the benchmark's sampled rows
  (penalties, top-k 50, top-p 0.9) about 2 (copy to the fp32 workspace: read + write) + 1 (max, sum) +
  2-3 (top-k pivot search) + 1 (gather of the top-k survivors), then top-p and the draw on <= 1024
  candidates. Prediction: greedy batches within 1.3x of torch.argmax; sampled batch 256 about 6-7 reads,
  so 300-400 us; batch 1 is one program on one SM, bound by load latency rather than bandwidth: the
  risk for the 5x target at batch 1 (a row split over several programs would be the next step).
- The baseline costs ~70 launches and two host syncs plus a full sort: hundreds of microseconds even at
  batch 1.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from unittest import mock

import torch

from bench.ceilings import copy_bandwidth_gbps
from bench.report import write_rows
from bench.timing import gpu_missing, input_sets_for, time_rotating
from kernels import _sampling_split, registry
from kernels._sampling_registration import bench_params
from kernels.sampling import CONFIGS, SamplingTensors, launch, sample_rowwise

DEVICE = "cuda"
CROSSOVER_BATCHES = [16, 32, 64, 96, 128, 192, 256]
SPLIT_EXPLORE = [(2048, 4), (2048, 8), (4096, 8), (4096, 16), (8192, 16)]  # (CHUNK, num_warps) of the split kernels


def input_sets(op, case, l2_bytes: int) -> list[dict]:
    n = input_sets_for(op.bytes(case), l2_bytes)
    gen = torch.Generator(device=DEVICE)
    return [op.make_inputs(case, torch.device(DEVICE), gen.manual_seed(i)) for i in range(n)]


def mixed_inputs(case, l2_bytes: int) -> list[dict]:
    """Half greedy, half sampled rows (the sampled half with the benchmark's filters and penalties)."""
    B, V = case["batch"], case["vocab"]
    rng = random.Random(0)
    sets = []
    for i in range(input_sets_for(B * V * 4, l2_bytes)):
        params = [bench_params("bench-greedy" if r % 2 else "bench-sampled") for r in range(B)]
        prompts = [[rng.randrange(V) for _ in range(256)] for _ in range(B)]
        outputs = [[rng.randrange(V) for _ in range(128)] for _ in range(B)]
        st = SamplingTensors.build(params, prompts, outputs, [i * B + r for r in range(B)], V, DEVICE)
        sets.append({"logits": 3 * torch.randn(B, V, device=DEVICE), "st": st})
    return sets


def explore(op, l2_bytes: int, rows: list, save) -> None:
    for case in op.bench_cases():
        sets = input_sets(op, case, l2_bytes)
        for i, config in enumerate(CONFIGS["cuda"]):
            try:
                t = time_rotating(lambda logits, st, c=config: launch(logits, st, config=c), sets)
            except Exception as e:  # a config that cannot compile or run here is reported, not fatal
                print(f"  config {i} {config}: {type(e).__name__}: {str(e)[:160]}", flush=True)
                continue
            rows.append({"batch": case["batch"], "vocab": case["vocab"], "mode": case["mode"], "config": i,
                         "params": str(config), "ms": t})
        for chunk, warps in SPLIT_EXPLORE:
            try:
                with mock.patch.dict(_sampling_split.CONFIGS["cuda"], CHUNK=chunk, num_warps=warps):
                    t = time_rotating(op.triton, sets)
            except Exception as e:  # a config that cannot compile or run here is reported, not fatal
                print(f"  split CHUNK={chunk} num_warps={warps}: {type(e).__name__}: {str(e)[:160]}", flush=True)
                continue
            rows.append({"batch": case["batch"], "vocab": case["vocab"], "mode": case["mode"], "config": "split",
                         "params": f"CHUNK={chunk} num_warps={warps}", "ms": t})
        print(f"explored {case['mode']} B={case['batch']} V={case['vocab']}", flush=True)
        save(rows)


def crossover(op, l2_bytes: int, rows: list, save) -> None:
    # Where the split kernels stop paying (their MAX_ROWS): both paths forced, sampled rows, V=151936.
    forced = {"split": lambda logits, st: _sampling_split.launch_split(logits, st)[0].tolist(),
              "rowwise": sample_rowwise}
    for batch in CROSSOVER_BATCHES:
        case = {"batch": batch, "vocab": 151936, "mode": "bench-sampled", "dtype": torch.float32}
        sets = input_sets(op, case, l2_bytes)
        for name, fn in forced.items():
            rows.append({"batch": batch, "vocab": 151936, "mode": "bench-sampled", "config": name,
                         "params": "forced", "ms": time_rotating(fn, sets)})
        print(f"crossover B={batch}: " + ", ".join(f"{r['config']} {r['ms'] * 1e3:.0f} us" for r in rows[-2:]),
              flush=True)
        save(rows)


def bench(op, copy_gbs: float, l2_bytes: int, rows: list, save) -> None:
    cases = op.bench_cases()
    cases = cases + [dict(c, mode="mixed-half-greedy") for c in cases
                     if c["mode"] == "bench-sampled" and c["batch"] > 1]
    for case in cases:
        sets = mixed_inputs(case, l2_bytes) if case["mode"] == "mixed-half-greedy" else input_sets(op, case, l2_bytes)
        B, V = case["batch"], case["vocab"]
        t_kernel = time_rotating(op.triton, sets)
        t_rowwise = time_rotating(sample_rowwise, sets)
        t_base = time_rotating(op.baseline, sets)
        t_argmax = time_rotating(lambda logits, st: torch.argmax(logits, -1), sets)
        nbytes = op.bytes(case)
        rows.append({
            "mode": case["mode"], "batch": B, "vocab": V, "kernel_ms": t_kernel, "rowwise_ms": t_rowwise,
            "torch_sort_ms": t_base,
            "argmax_ms": t_argmax, "speedup": t_base / t_kernel, "vs_argmax": t_kernel / t_argmax,
            "kernel_gbs": nbytes / t_kernel / 1e6, "pct_copy_bw": 100 * nbytes / t_kernel / 1e6 / copy_gbs,
        })
        print(f"{case['mode']:>18} B={B:<4} V={V:<7} kernel {t_kernel * 1e3:8.1f} us  torch sort "
              f"{t_base * 1e3:8.1f} us  x{t_base / t_kernel:5.1f}  row-wise {t_rowwise * 1e3:8.1f} us  "
              f"argmax {t_argmax * 1e3:7.1f} us", flush=True)
        save(rows)


def writer(path: str):
    def save(rows: list) -> None:
        write_rows(rows, path)
    return save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".", help="folder for sampling_bench.csv (and sampling_configs.csv)")
    ap.add_argument("--explore", action="store_true", help="time every CUDA config of the kernel, fixed, first")
    ap.add_argument("--crossover", action="store_true",
                    help="time the split and row-wise paths, both forced, over batch sizes (sampling_crossover.csv)")
    args = ap.parse_args()
    if gpu_missing("tune_sampling"):
        sys.exit(2)
    os.makedirs(args.out, exist_ok=True)
    op = registry.get("sample")
    props = torch.cuda.get_device_properties(0)
    l2 = int(getattr(props, "L2_cache_size", 50 << 20))
    copy_gbs = copy_bandwidth_gbps()
    print(f"{props.name}: copy {copy_gbs:.0f} GB/s, L2 {l2 >> 20} MiB", flush=True)
    t0 = time.time()
    if args.explore:
        explore(op, l2, [], writer(os.path.join(args.out, "sampling_configs.csv")))
        print(f"explore took {time.time() - t0:.0f} s", flush=True)
    if args.crossover:
        crossover(op, l2, [], writer(os.path.join(args.out, "sampling_crossover.csv")))
    rows: list = []
    bench(op, copy_gbs, l2, rows, writer(os.path.join(args.out, "sampling_bench.csv")))
    print(f"\n{props.name}, copy {copy_gbs:.0f} GB/s; times in microseconds (median, do_bench)")
    print(f"{'mode':>18} {'B':>4} {'V':>7} {'kernel':>9} {'row-wise':>9} {'torch sort':>10} {'speedup':>7} "
          f"{'argmax':>8} {'k/argmax':>8} {'%copy':>6}")
    for r in rows:
        print(f"{r['mode']:>18} {r['batch']:>4} {r['vocab']:>7} {r['kernel_ms'] * 1e3:9.1f} "
              f"{r['rowwise_ms'] * 1e3:9.1f} "
              f"{r['torch_sort_ms'] * 1e3:10.1f} {r['speedup']:7.1f} {r['argmax_ms'] * 1e3:8.1f} "
              f"{r['vs_argmax']:8.2f} {r['pct_copy_bw']:6.1f}")


if __name__ == "__main__":
    main()
