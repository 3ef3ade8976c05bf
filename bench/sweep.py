"""``tritonforge bench`` (also ``python -m bench.sweep``): time ops against their baselines and the card.

Everything comes from the registry: each op's ``bench_cases()``, ``make_inputs``, its implementations, its
``baseline`` and its roofline model (``flops``, ``bytes``). On a GPU the sweep

1. measures the card's ceilings (copy bandwidth, bf16 matmul rate) in this process;
2. per op, checks the implementation on the op's smoke cases with each kernel's first config, untimed
   (nothing wrong gets timed, and no autotuning is spent on shapes that are not timed);
3. per case, times the implementation and the baseline as CUDA-graph replays over rotated inputs (see
   bench.timing: launch overhead excluded, working set beyond L2), medians; autotuned kernels pick their
   config at the first launch of each key, outside the timing;
4. checks the first timed case again against the reference: the configs the autotuner picked must be right too;
5. writes ``<out>/<op>.csv`` and ``<out>/<op>.png`` and prints a table.

On a CPU it refuses to time (the interpreter's speed says nothing about a GPU's); ``--correctness`` runs
each op's smoke cases through the interpreter instead.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.check import OpModuleBroken, check_op, format_results, select_ops, use_interpreter_without_gpu

QUICK_CASES = 8
DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "half": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16"}
CPU_REFUSAL = (
    "tritonforge bench: no GPU is visible to torch, and timings from Triton's CPU interpreter say nothing "
    "about a GPU's speed, so nothing was timed. Run it on a machine with an NVIDIA or AMD GPU, or pass "
    "--correctness to check each op's smoke cases here through the interpreter."
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", nargs="+", metavar="OP", help="ops to sweep (default: every registered op)")
    parser.add_argument("--dtypes", nargs="+", metavar="DTYPE", help="only cases of these dtypes (bf16 fp16 fp32)")
    parser.add_argument("--quick", action="store_true", help=f"at most {QUICK_CASES} cases per op, one dtype")
    parser.add_argument("--out", type=Path, help="output folder (default bench/results/<gpu name>/)")
    parser.add_argument("--impl", default="triton", help="implementation to time: triton or a registered variant")
    parser.add_argument("--correctness", action="store_true",
                        help="only check the smoke cases (through the interpreter on a CPU); time nothing")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plots")


def parse_dtypes(names: list[str] | None):
    import torch

    if not names:
        return None
    out = []
    for n in names:
        if n.lower() not in DTYPES:
            raise ValueError(f"unknown dtype {n!r}; choose from {', '.join(sorted(set(DTYPES)))}")
        out.append(getattr(torch, DTYPES[n.lower()]))
    return out


def select_cases(cases: list[dict[str, Any]], dtypes, quick: bool) -> list[dict[str, Any]]:
    """Filter by dtype; with ``quick`` keep one dtype and an even spread of at most QUICK_CASES cases."""
    if dtypes is not None:
        cases = [c for c in cases if c.get("dtype") in dtypes]
    if quick and cases:
        first = cases[0].get("dtype")
        cases = [c for c in cases if c.get("dtype") == first]
        if len(cases) > QUICK_CASES:
            step = (len(cases) - 1) / (QUICK_CASES - 1)
            cases = [cases[round(i * step)] for i in range(QUICK_CASES)]
    return cases


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def time_case(op, case, impl: str, ceilings) -> tuple[float, float | None, str]:
    """(impl ms, baseline ms or None, timing method) for one case, on rotated fresh inputs."""
    import torch

    from bench.timing import input_sets_for, time_each

    device = torch.device("cuda")
    gen = torch.Generator(device=device).manual_seed(0)
    n_sets = input_sets_for(op.bytes(case), ceilings.l2_bytes)
    sets = [op.make_inputs(case, device, gen) for _ in range(n_sets)]
    fns = [op.impl(impl)] + ([op.baseline] if op.baseline is not None else [])
    times, method = time_each(fns, sets)
    del sets
    torch.cuda.empty_cache()
    return times[0], (times[1] if len(times) > 1 else None), method


def check_tuned_case(op, case, impl: str) -> str:
    """``ok`` or the first line of the mismatch: ``case`` through run_case with the autotuned configs."""
    import torch

    from kernels.testing import run_case

    try:
        run_case(op, case, torch.device("cuda"), seed=0, impl=impl)
        return "ok"
    except Exception as e:  # reported in the table and the CSV, never hidden
        return f"FAIL {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def sweep_op(op, args, dtypes, ceilings, out_dir: Path, commit: str, date: str) -> list[dict[str, Any]]:
    """Time every selected case of ``op``; write its CSV and plot; return the rows (cases that failed to
    time are reported and left out)."""
    from bench import report

    cases = select_cases(op.bench_cases(), dtypes, args.quick)
    suffix = "" if args.impl == "triton" else f"_{report.safe_name(args.impl)}"
    rows = []
    for case in cases:
        try:
            ms, base_ms, timing = time_case(op, case, args.impl, ceilings)
        except RuntimeError as e:  # out of memory, say: report the case and go on with the others
            print(f"  {op.name} {report.shape_string(case)}: not timed: {str(e).splitlines()[0]}", flush=True)
            continue
        rows.append(report.derive_row(
            op=op.name, impl=args.impl, case=case, flops=op.flops(case), nbytes=op.bytes(case), median_ms=ms,
            baseline=op.baseline_name if op.baseline is not None else None, baseline_ms=base_ms,
            ceilings=ceilings, timing=timing, commit=commit, date=date,
        ))
        versus = f", {op.baseline_name} {base_ms:.4f} ms: {base_ms / ms:.2f}x" if base_ms else ""
        print(f"  {op.name} {report.shape_string(case)} {report.dtype_name(case.get('dtype'))}: "
              f"{ms:.4f} ms ({rows[-1]['pct_of_ceiling']:.0f}% of ceiling{versus})", flush=True)
        if len(rows) == 1:
            rows[0]["tuned_check"] = check_tuned_case(op, case, args.impl)
            print(f"  {op.name}: the autotuned config of that case against the reference: {rows[0]['tuned_check']}",
                  flush=True)
        # Rewritten after every case: a sweep stopped by a time limit keeps the op's cases timed so far.
        report.write_csv(rows, out_dir / f"{op.name}{suffix}.csv")
    if rows and not args.no_plot:
        report.plot(rows, out_dir / f"{op.name}{suffix}.png")
    return rows


def run(args: argparse.Namespace) -> int:
    interpreted = use_interpreter_without_gpu()
    try:
        dtypes = parse_dtypes(args.dtypes)
        ops = select_ops(args.ops)
    except (KeyError, ValueError, OpModuleBroken) as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 1 if isinstance(e, OpModuleBroken) else 2
    lacking = [op for op in ops if args.impl not in op.impls]
    if len(lacking) == len(ops):
        registered = "; ".join(f"{op.name}: {', '.join(sorted(op.impls))}" for op in ops)
        print(f"error: no chosen op has an implementation {args.impl!r}, so there is nothing to check or time. "
              f"Registered implementations: {registered}", file=sys.stderr)
        return 2
    if interpreted:
        if not args.correctness:
            print(CPU_REFUSAL, file=sys.stderr)
            return 2
        import torch

        print("no GPU visible: checking smoke cases in Triton's CPU interpreter (no timing)")
        results = [check_op(op, torch.device("cpu"), args.impl) for op in ops if args.impl in op.impls]
        print(format_results(results))
        if lacking:
            print("not checked: " + "; ".join(f"{op.name} (no implementation {args.impl!r})" for op in lacking))
        return 0 if all(r.ok for r in results) else 1

    import torch

    from bench import ceilings as ceilings_mod
    from bench import report
    from kernels.tuning import tuning

    device = torch.device("cuda")
    with tuning("first"):
        checks = []
        for op in ops:
            if args.impl in op.impls:
                checks.append(check_op(op, device, args.impl))
                print(f"checked {op.name}: {'ok' if checks[-1].ok else checks[-1].worst}", flush=True)
    print(format_results(checks))
    if args.correctness:
        return 0 if all(r.ok for r in checks) else 1
    ceilings = ceilings_mod.measure()
    print(f"{ceilings.gpu}: copy {ceilings.copy_gbps:.0f} GB/s, bf16 matmul {ceilings.matmul_tflops:.0f} TFLOP/s, "
          f"L2 {ceilings.l2_bytes >> 20} MiB")
    out_dir = report.results_dir(ceilings.gpu, args.out)
    commit, date = git_commit(), datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    passed = {r.op for r in checks if r.ok}
    all_rows, skipped, failed = [], [], []
    for op in ops:
        if args.impl not in op.impls:
            skipped.append(f"{op.name} (no implementation {args.impl!r})")
        elif op.name not in passed:
            failed.append(op.name)
            skipped.append(f"{op.name} (failed its correctness check)")
        else:
            with tuning("autotune"):  # timings are of tuned kernels, whatever TRITONFORGE_TUNE says
                rows = sweep_op(op, args, dtypes, ceilings, out_dir, commit, date)
            all_rows += rows
            failed += [op.name for r in rows[:1] if r.get("tuned_check", "ok") != "ok"]
    if all_rows:
        from bench.summarize import summarize

        print("\n" + report.format_table(all_rows))
        print("\n" + "\n".join(summarize(all_rows, ceilings.l2_bytes / 2**20)))
        print(f"\nCSVs and plots in {out_dir}")
    if skipped:
        print("not timed: " + "; ".join(skipped))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.splitlines()[0])
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
