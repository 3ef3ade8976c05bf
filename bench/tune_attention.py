"""Tile study and target check for the attention and KV-paging kernels, in one GPU run.

Measures the card's copy bandwidth in the same process, then for each kernel:

1. ``sweep``: times the shipped tile on every registered benchmark case next to the baseline (SDPA for
   attention, torch's index_copy_ for the KV write), on rotated inputs, timed as the registry sweep
   times them (bench.timing.time_each: CUDA-graph replays, device events where capture fails); paged
   decode also as the engine calls it (``shipped_fresh1``: ``fresh_tokens=1``);
2. ``explore`` (with --explore): times candidate launch tiles on a few representative shapes (each
   checked against the baseline first), to choose the per-head-dim entries of ``TILES``;
3. ``splits`` (with --splits): paged decode at batch 1 to 32, where split-KV decides the time: the
   shipped policy (``auto``) beside other split rules (module settings) and split counts (``num_splits``)
   with each tile tried, to choose the split policy's constants and ``SPLIT_TILES``.

Writes ``<out>/attention_<study>.csv`` and prints a short table per study::

    PYTHONPATH=. python3 bench/tune_attention.py "$OUT" [kv prefill decode] [--explore] [--no-sweep]
        [--splits] [--batch N ...] [--deadline-s=SECONDS]
    (--deadline-s: start no new case after that many seconds; what is done is written)

The slice's whole GPU check is one call: its tests (GPU-marked ones included), then this script::

    PYTHONPATH=. python3 -m pytest -q -m "kv_cache_write or prefill_attention or paged_decode_attention" \
        tests/test_kv_cache.py tests/test_prefill_attention.py tests/test_paged_decode.py tests/test_decode_splits.py \
        tests/test_ops.py
    PYTHONPATH=. python3 bench/tune_attention.py "$OUT" --explore --deadline-s=240

then commit ``$OUT/attention_*.csv`` under ``bench/results/<gpu name>/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bench.ceilings import measure
from bench.module_settings import module_settings
from bench.report import write_rows
from bench.timing import gpu_missing, input_sets_for, time_each
from kernels import registry

PREFILL_TILES = [  # ONE_LOOP: the diagonal tiles in the pipelined key loop; TMA: Q/K/V by tensor descriptor
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3, ONE_LOOP=True),  # shipped at D=128
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3, ONE_LOOP=True, TMA=True),
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=2, ONE_LOOP=True, TMA=True),
    dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3, TMA=True),  # the shipped D=64 tile, by TMA
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=2, ONE_LOOP=True),
    dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3, ONE_LOOP=True),
    dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=2),
    dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=2, ONE_LOOP=True),
    dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2),
]
DECODE_TILES = [  # 5 stages double-buffer K/V (kernels/paged_decode.py); 64/4/3 is the single-buffered one
    dict(BLOCK_N=32, num_warps=4, num_stages=5),
    dict(BLOCK_N=64, num_warps=4, num_stages=5),
    dict(BLOCK_N=64, num_warps=4, num_stages=7),
    dict(BLOCK_N=64, num_warps=8, num_stages=5),
    dict(BLOCK_N=128, num_warps=8, num_stages=5),
    dict(BLOCK_N=64, num_warps=4, num_stages=3),
]
BF16 = torch.bfloat16
DEVICE = "cuda"


def _prefill(batch, seq, D, Hq, Hkv, causal, prefix=0, bs=16):
    return {"batch": batch, "seqlen": seq, "prefix": prefix, "q_heads": Hq, "kv_heads": Hkv, "head_dim": D,
            "block_size": bs, "dtype": BF16, "causal": causal}


def _decode(batch, ctx, Hq, Hkv, bs, D=128):
    return {"batch": batch, "context": ctx, "q_heads": Hq, "kv_heads": Hkv, "head_dim": D, "block_size": bs,
            "dtype": BF16, "num_splits": None, "pass_max": True, "layout": "contiguous"}


KV_TILES = [  # tokens per program x warps; the shipped rule moves 4096 elements per program on 4 warps
    dict(BLOCK_T=t, num_warps=w) for t in (4, 8, 16, 32, 64) for w in (2, 4, 8)
]


def _kv(tokens, heads, bs=16):
    return {"tokens": tokens, "kv_heads": heads, "head_dim": 128, "block_size": bs, "dtype": BF16,
            "pad_every": 0, "index_dtype": torch.int64}


EXPLORE = {
    "kv_cache_write": (KV_TILES, [_kv(4096, 8), _kv(4096, 2), _kv(16384, 2), _kv(16384, 8)]),
    "prefill_attention": (PREFILL_TILES, [  # the target's shapes (D=128 causal, 1k..16k) first
        _prefill(16, 1024, 128, 32, 32, True), _prefill(8, 2048, 128, 32, 32, True),
        _prefill(4, 4096, 128, 32, 32, True), _prefill(2, 8192, 128, 32, 32, True),
        _prefill(1, 16384, 128, 32, 32, True), _prefill(16, 1024, 128, 32, 8, True),
        _prefill(8, 2048, 128, 32, 8, True),
        _prefill(4, 4096, 128, 32, 32, False), _prefill(8, 512, 128, 32, 8, True, prefix=4096),
        _prefill(16, 1024, 64, 16, 16, True), _prefill(4, 4096, 64, 16, 16, True),
    ]),
    "paged_decode_attention": (DECODE_TILES, [
        _decode(1, 32768, 32, 8, 16), _decode(64, 4096, 32, 8, 16), _decode(8, 16384, 14, 2, 128),
    ]),
}
# The split study: a candidate carries ``num_splits`` (None: the policy) beside its tile (none: the policy's
# tile), and may carry ``settings`` (module data set for the length of its calls, bench.module_settings) with
# a ``label`` naming them: run 19 sets the run-18 split rule (no long-split launches) beside the shipped one.
SPLIT_TILES_TRIED = [
    dict(BLOCK_N=32, num_warps=4, num_stages=5),  # the pipelined tile of one-split and long-split launches
    dict(BLOCK_N=128, num_warps=4, num_stages=1),  # no software pipeline: a split of one tile loads it at once
]
RUN18_RULE = {"kernels._decode_splits.LONG_SPLIT": 1 << 30}  # short splits only, as in run 18
SPLIT_CANDIDATES = [
    dict(num_splits=None), dict(num_splits=None, label="run18", settings=RUN18_RULE),
    dict(num_splits=None, label="long256", settings={"kernels._decode_splits.LONG_SPLIT": 256}),
    *(dict(num_splits=n, **SPLIT_TILES_TRIED[0]) for n in (8, 16, 32, 64)),
    *(dict(num_splits=n, **SPLIT_TILES_TRIED[1]) for n in (8, 16)),
]
SPLIT_CASES = [
    _decode(1, 4096, 32, 8, 16), _decode(1, 16384, 32, 8, 16), _decode(1, 32768, 32, 8, 16),
    _decode(1, 4096, 14, 2, 16), _decode(1, 32768, 14, 2, 16), _decode(1, 65536, 14, 2, 16),
    _decode(8, 4096, 32, 8, 16), _decode(8, 32768, 32, 8, 16), _decode(16, 4096, 32, 8, 16),
    _decode(32, 4096, 32, 8, 16), _decode(8, 4096, 14, 2, 16), _decode(8, 32768, 14, 2, 128),
    _decode(8, 8192, 14, 2, 128), _decode(8, 16384, 14, 2, 128), _decode(4, 16384, 32, 8, 16),
]
STUDY_OPS = {"kv": "kv_cache_write", "prefill": "prefill_attention", "decode": "paged_decode_attention"}


def _short(case) -> str:
    keep = ("tokens", "batch", "seqlen", "prefix", "context", "q_heads", "kv_heads", "head_dim", "block_size",
            "causal")
    return " ".join(f"{k}={case[k]}" for k in keep if k in case)


def _tile_name(tile) -> str:
    if not tile:
        return "shipped"
    if "num_splits" in tile:  # a split-study candidate: split count (auto = the policy), label, tile
        rest = {k: v for k, v in tile.items() if k not in ("num_splits", "label", "settings")}
        label = f"{tile['label']}/" if tile.get("label") else ""
        return f"s{tile['num_splits'] or 'auto'}/{label}" + _tile_name(rest)
    flags = "".join(f"/{k.lower()}" for k, v in tile.items() if v is True)
    return "/".join(f"{v}" for v in tile.values() if not isinstance(v, bool)) + flags


def _check(op, fn, inputs) -> float:
    """Relative error of ``fn`` against the baseline (float32 inputs where it returns a tensor)."""
    fresh = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    out = fn(**fresh)
    if out is None:  # in place: compare the caches the baseline writes
        ref_inputs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        op.baseline(**ref_inputs)
        return max(float((fresh[k].float() - ref_inputs[k].float()).abs().max()) for k in op.mutates)
    up = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in inputs.items()}
    ref = op.baseline(**up)
    return float((out.float() - ref).norm() / ref.norm())


def _time(fns, sets):
    """The team's method (bench.timing.time_each): CUDA-graph replays, events where capture fails."""
    times, timing = time_each(list(fns.values()), sets)
    return dict(zip(fns, times, strict=True)), timing


DEADLINE = [float("inf")]


def _candidate(op, tile):
    """``op.triton`` launched with ``tile``; a split-study candidate also sets the split count and, for the
    length of each call, its ``settings`` (the kernels read them at launch)."""
    tile = dict(tile)
    if "num_splits" not in tile:
        return lambda **kw: op.triton(**kw, _tile=tile)
    splits, settings = tile.pop("num_splits"), tile.pop("settings", {})
    tile.pop("label", None)

    def run(**kw):
        with module_settings(settings):
            return op.triton(**kw, num_splits=splits, _tile=tile)
    return run


def run_cases(op, cases, tiles, ceilings, study):
    rows = []
    for case in cases:
        if time.monotonic() > DEADLINE[0]:
            print(f"deadline reached: {op.name} {study} stopped before {_short(case)}", flush=True)
            break
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        nbytes, flops = op.bytes(case), op.flops(case)
        sets = [op.make_inputs(case, DEVICE, gen) for _ in range(input_sets_for(nbytes, ceilings.l2_bytes))]
        fns = {}
        for tile in tiles:
            fn = op.triton if tile is None else _candidate(op, tile)
            try:
                err = _check(op, fn, sets[0])
            except Exception as e:  # a tile that does not compile (shared memory) is reported, not fatal
                print(f"  {_tile_name(tile)}: {type(e).__name__}: {str(e)[:120]}", flush=True)
                continue
            if err > 2e-2:
                print(f"  {_tile_name(tile)}: WRONG (relative error {err:.3g}); not timed", flush=True)
                continue
            fns[_tile_name(tile)] = fn
        if not fns:
            print(f"{op.name} {_short(case)}: no tile gave a right answer; nothing timed", flush=True)
            continue
        if op.name == "paged_decode_attention" and "shipped" in fns:
            # As the engine's decode calls it: the first tile's settled KV read before the PDL wait.
            fresh = lambda **kw: op.triton(**kw, fresh_tokens=1)
            if _check(op, fresh, sets[0]) <= 2e-2:
                fns["shipped_fresh1"] = fresh
        fns["baseline"] = op.baseline
        times, timing = _time(fns, sets)
        base = times["baseline"]
        for label, ms in times.items():
            rows.append({
                "study": study, "op": op.name, "tile": label, "case": _short(case), "median_us": ms * 1e3,
                "tflops": flops / ms / 1e9, "gbps": nbytes / ms / 1e6,
                "pct_of_copy": 100 * nbytes / ms / 1e6 / ceilings.copy_gbps,
                "vs_baseline": base / ms, "timing": timing, "gpu": ceilings.gpu, "copy_gbps": ceilings.copy_gbps,
            })
        best = min((ms, label) for label, ms in times.items() if label != "baseline")
        print(f"{op.name[:14]:14s} {_short(case):78s} best {best[1]:12s} {best[0] * 1e3:9.1f} us "
              f"{flops / best[0] / 1e9:6.1f} TF {100 * nbytes / best[0] / 1e6 / ceilings.copy_gbps:5.1f}%copy "
              f"| base {base * 1e3:9.1f} us x{base / best[0]:5.2f} [{timing}]", flush=True)
        del sets
        torch.cuda.empty_cache()
    return rows


def write(rows, out_dir, name):
    path = write_rows(rows, Path(out_dir) / f"attention_{name}.csv", float_format=".5g")
    if path:
        print(f"wrote {path}", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", nargs="?", default="bench/results/tune", help="folder for attention_<study>.csv")
    p.add_argument("studies", nargs="*", metavar="STUDY", help=f"any of {', '.join(STUDY_OPS)} (default: all)")
    p.add_argument("--explore", action="store_true", help="also time the candidate tiles (EXPLORE)")
    p.add_argument("--splits", action="store_true", help="also run the paged decode split study (SPLIT_CASES)")
    p.add_argument("--batch", type=int, nargs="+", default=None,
                   help="sweep only the cases of these batch sizes (cases without a batch are kept)")
    p.add_argument("--no-sweep", action="store_true", help="skip the shipped tile's sweep of the bench cases")
    p.add_argument("--deadline-s", type=float, default=None,
                   help="start no new case after this many seconds; what is done is written")
    args = p.parse_intermixed_args(argv)
    unknown = [s for s in args.studies if s not in STUDY_OPS]
    if unknown:
        p.error(f"unknown study {unknown[0]!r}; choose from {', '.join(STUDY_OPS)}")
    return args


def main(argv) -> int:
    args = parse_args(argv)
    if gpu_missing("tune_attention"):
        return 2
    out_dir, explore = args.out_dir, args.explore
    if args.deadline_s is not None:
        DEADLINE[0] = time.monotonic() + args.deadline_s
    studies = args.studies or list(STUDY_OPS)
    ceilings = measure()
    print(f"{ceilings.gpu}: copy {ceilings.copy_gbps:.0f} GB/s, bf16 matmul {ceilings.matmul_tflops:.0f} TFLOP/s, "
          f"L2 {ceilings.l2_bytes >> 20} MiB, {torch.cuda.get_device_properties(0).multi_processor_count} SMs",
          flush=True)
    # The sweeps first (what gets committed), then the tile studies with whatever time is left.
    if not args.no_sweep:
        for study in studies:
            op = registry.get(STUDY_OPS[study])
            cases = [c for c in op.bench_cases() if args.batch is None or c.get("batch", args.batch[0]) in args.batch]
            write(run_cases(op, cases, [None], ceilings, "sweep"), out_dir, study)
    for study in studies if explore else []:
        op = registry.get(STUDY_OPS[study])
        if op.name in EXPLORE:
            tiles, cases = EXPLORE[op.name]
            write(run_cases(op, cases, tiles, ceilings, "explore"), out_dir, f"{study}_explore")
    if args.splits:
        op = registry.get("paged_decode_attention")
        write(run_cases(op, SPLIT_CASES, SPLIT_CANDIDATES, ceilings, "splits"), out_dir, "decode_splits")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
