"""Host (CPU) time of one engine step, split by phase: where the Python overhead of a decode step goes.

    PYTHONPATH=. python3 bench/engine_host_overhead.py --out bench/results/cpu --label after
    PYTHONPATH=. python3 bench/engine_host_overhead.py --compare-before b1.json b2.json --compare-after a1.json

A decode step of a small model is bound by host work, not by the GPU: the forward pass of a
Qwen2.5-0.5B-shaped model takes ~0.24 ms on an H200 while a whole step took 2-3 ms. This script builds a
small model of a real architecture (the demo builder: Qwen3 layout, random weights, a local byte-level BPE
tokenizer), loads it through the engine's normal loader, brings ``batch`` requests to steady decode, and
times ``steps`` decode steps. Each phase of the step is timed by wrapping the engine's own functions:

    schedule      Scheduler.schedule
    metadata      build_step_batch (token ids, positions, slots, block tables to the device)
    forward       the model's forward + logits (device work on a GPU; reported apart from host time)
    sampling_tensors  SamplingTensors.build (per-row parameters, penalty edits, rng keys)
    sample_op     the ``sample`` op (device work; reported apart)
    postprocess   Scheduler.postprocess (append tokens, stop checks, block commits)
    detokenize    building each request's output (incremental detokenizer, stop strings)
    other         the rest of the step: reading the sampled tokens back, glue

Host time = step time - forward - sample_op. On a CPU the device phases are stubbed by default
(``--device-work stub``: the forward returns random logits, the sample op takes their argmax), because the
torch reference forward and sampler would take seconds per step at batch 256 and measure nothing of
interest here; every host phase still runs for real. On a GPU the wrappers synchronise after the forward and the
sample op so that device time is not charged to the host phase that happens to wait for it (``--no-sync``
measures the unsynchronised step instead). Medians over ``--repeats`` runs of ``--steps`` steps each.

Workloads: greedy (temperature 0), sampled (temperature 0.8, top-p 0.95, seeded), and penalised
(sampled plus repetition and frequency penalties), each at batch 1, 64 and 256 by default.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

HOST_PHASES = ("schedule", "metadata", "sampling_tensors", "postprocess", "detokenize", "other")
DEVICE_PHASES = ("forward", "sample_op")
WORKLOADS = {
    "greedy": dict(temperature=0.0),
    "sampled": dict(temperature=0.8, top_p=0.95),
    "penalised": dict(temperature=0.8, top_p=0.95, repetition_penalty=1.1, frequency_penalty=0.2),
}


class PhaseTimer:
    """Accumulates seconds per phase for the current step; wraps callables so they time themselves."""

    def __init__(self, sync):
        self.sync = sync
        self.current: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn, device_work: bool = False):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t = time.perf_counter()
            result = fn(*args, **kwargs)
            if device_work:
                self.sync()
            self.current[name] += time.perf_counter() - t
            return result
        return timed


def instrument(engine, timer: PhaseTimer) -> None:
    """Wrap the engine's phase functions (instance attributes shadow the methods; module names are
    patched where the runner looks them up)."""
    import engine.model_runner as model_runner
    import kernels.sampling as sampling

    engine.scheduler.schedule = timer.wrap("schedule", engine.scheduler.schedule)
    engine.scheduler.postprocess = timer.wrap("postprocess", engine.scheduler.postprocess)
    engine._report = timer.wrap("detokenize", engine._report)
    engine.runner._logits = timer.wrap("forward", engine.runner._logits, device_work=True)
    engine.runner.ops.sample = timer.wrap("sample_op", engine.runner.ops.sample, device_work=True)
    model_runner.build_step_batch = timer.wrap("metadata", model_runner.build_step_batch)
    build = sampling.SamplingTensors.__dict__["build"].__func__
    sampling.SamplingTensors.build = staticmethod(timer.wrap("sampling_tensors", build))


def stub_device_work(engine, seed: int = 0) -> None:
    """Replace the forward and the sample op by cheap stand-ins (host phases are untouched)."""
    from kernels.sampling import SampleResult

    gen = torch.Generator().manual_seed(seed)
    vocab = engine.model_config.vocab_size

    def logits(batch):  # as ModelRunner._logits: (logits, argmax or None)
        if not batch.sampled_seqs:
            return None, None
        return torch.randn(len(batch.sampled_seqs), vocab, generator=gen), None

    def sample(logits, st):
        tokens = logits.argmax(-1)
        return SampleResult(tokens, torch.zeros(tokens.shape[0]), None, None)

    engine.runner._logits = logits
    engine.runner.ops.sample = sample


def measure(engine, timer: PhaseTimer, batch: int, params: dict, steps: int, prompt_len: int, rng) -> list[dict]:
    """Per-step phase seconds for ``steps`` decode steps at ``batch`` running requests."""
    from engine.sampling_params import SamplingParams

    vocab = engine.model_config.vocab_size
    ids = []
    for i in range(batch):
        prompt = [rng.randrange(3, vocab) for _ in range(prompt_len)]
        ids.append(engine.add_request(prompt, SamplingParams(max_tokens=steps + 4, ignore_eos=True, seed=i, **params)))
    while engine.last_step_shape[2] != batch or engine.last_step_shape[0] != batch:  # prefill until all decode
        engine.step()
    records = []
    for _ in range(steps):
        timer.current.clear()
        t = time.perf_counter()
        engine.step()
        total = time.perf_counter() - t
        rec = dict(timer.current)
        rec["other"] = total - sum(rec.values())
        rec["step"] = total
        rec["host"] = total - rec.get("forward", 0.0) - rec.get("sample_op", 0.0)
        records.append(rec)
    for request_id in ids:
        engine.abort(request_id)
    engine.step()  # collect the aborts' outputs
    return records


def compare(before_paths: list[str], after_paths: list[str]) -> str:
    """A markdown table of per-phase medians (over the given runs) before and after."""
    def load(paths):
        runs = [json.loads(Path(p).read_text())["results"] for p in paths]
        return {case: {phase: statistics.median(r[case][phase] for r in runs) for phase in runs[0][case]}
                for case in runs[0]}
    before, after = load(before_paths), load(after_paths)
    phases = (*HOST_PHASES, "host")
    lines = ["| case | " + " | ".join(phases) + " |", "|---" * (len(phases) + 1) + "|"]
    for case in before:
        if case in after:
            cells = [f"{before[case][p]:.3f} -> {after[case][p]:.3f}" for p in phases]
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare-before", nargs="+", metavar="JSON", help="runs before (with --compare-after)")
    parser.add_argument("--compare-after", nargs="+", metavar="JSON",
                        help="print a markdown table of these runs against --compare-before instead of measuring")
    parser.add_argument("--out", help="directory for engine_host_overhead_<label>.json / .md")
    parser.add_argument("--label", default="run", help="name of this run (before / after)")
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 64, 256])
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompt-len", type=int, default=100)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--device-work", choices=("real", "stub"), default=None,
                        help="run the forward and the sample op (real) or stand-ins (stub; the CPU default)")
    parser.add_argument("--no-sync", action="store_true", help="do not synchronise after device phases")
    args = parser.parse_args(argv)
    if args.compare_before or args.compare_after:
        if not (args.compare_before and args.compare_after):
            parser.error("give both --compare-before and --compare-after")
        print(compare(args.compare_before, args.compare_after))
        return 0
    if not args.out:
        parser.error("--out is required when measuring")

    from engine.config import EngineConfig
    from engine.demo_model import build_demo_model
    from engine.llm_engine import LLMEngine

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" and not args.no_sync else (lambda: None)
    import random

    rng = random.Random(0)
    results = {}
    with tempfile.TemporaryDirectory(prefix="host-overhead-") as tmp:
        # A tiny Qwen3-layout model: on a CPU its forward stays small next to the host work measured here.
        model_dir = build_demo_model(Path(tmp) / "model", arch="qwen3", hidden_size=64, num_layers=2,
                                     num_heads=4, num_kv_heads=2, intermediate_size=128, max_position=2048)
        engine = LLMEngine(EngineConfig(model=str(model_dir), device=device, max_num_seqs=max(args.batches),
                                        max_num_batched_tokens=max(8192, max(args.batches) * args.prompt_len),
                                        enable_prefix_cache=True))
        device_work = args.device_work or ("real" if device.type == "cuda" else "stub")
        if device.type == "cpu":
            # The host work measured is single-threaded; idle intra-op threads waking for the stand-ins'
            # tensor ops only add noise on a shared machine.
            torch.set_num_threads(1)
        if device_work == "stub":
            stub_device_work(engine)
        timer = PhaseTimer(sync)
        instrument(engine, timer)
        measure(engine, timer, 2, WORKLOADS["sampled"], 3, args.prompt_len, rng)  # warm-up
        for workload in args.workloads:
            for batch in args.batches:
                runs = [measure(engine, timer, batch, WORKLOADS[workload], args.steps, args.prompt_len, rng)
                        for _ in range(args.repeats)]
                # Median per phase of each run's per-step median, then the median over runs.
                phases = HOST_PHASES + DEVICE_PHASES + ("host", "step")
                summary = {p: statistics.median(statistics.median(r.get(p, 0.0) for r in run) for run in runs) * 1e3
                           for p in phases}
                results[f"{workload}/b{batch}"] = summary
                summary["host_phase_sum"] = sum(summary[p] for p in HOST_PHASES)
                print(f"{workload:9s} b={batch:3d}  host {summary['host']:7.3f} ms  " +
                      "  ".join(f"{p} {summary[p]:.3f}" for p in HOST_PHASES + DEVICE_PHASES),
                      file=sys.stderr, flush=True)
    machine = {"device": str(device), "device_work": device_work, "cpu": _cpu_name(),
               "python": platform.python_version(), "torch": torch.__version__,
               "cores": _cores(), "note": "shared machine, other work running: medians of medians"}
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    report = {"label": args.label, "machine": machine, "units": "ms per decode step",
              "args": vars(args), "results": results}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"engine_host_overhead_{args.label}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    sys.exit(main())
