"""Where a decode step's device time goes: every kernel of the batch-1 decode graph, timed by the profiler.

    PYTHONPATH=. python3 bench/decode_profile.py --out DIR [--models qwen2.5-0.5b llama-3.2-1b]
        [--variant NAME=OP=IMPL,kernels.MODULE.NAME=VALUE,... ...] [--replays 50]

For each model shape (random bf16 weights, real layout) and each variant, one engine is built, brought to
steady single-stream decode, and then profiled as below. A variant is a set of op overrides (``OP=IMPL``)
and of module settings (``kernels.MODULE.NAME=VALUE`` or ``engine.MODULE.NAME=VALUE``, a Python literal of the
setting's own type: ``kernels.paged_decode.FIT_SPLITS_TO_CONTEXT=False``,
``engine.decode_graphs.GRAPH_MAX_CONTEXT=512``), applied while that variant's engine is built and
profiled and restored after. The default variant ``engine`` changes nothing, so the engine's fusions are
on. For each:

- ``graph_ms``: the batch-1 decode graph's device time per replay (CUDA events over back-to-back replays,
  as engine_bench's ``graph_replay_ms``);
- a profile of ``--replays`` replays (torch.profiler, CUDA activity): per kernel name, launches per
  replay, mean microseconds per launch and per replay, and its share of the summed kernel time. Under PDL
  (kernels/pdl.py) a kernel starts before its predecessor ends and its time includes that wait, so the
  kernels overlap and their sum exceeds the graph time; a variant with ``kernels.pdl.ENABLED=False`` gives
  each kernel's own duration, and there the gap between the graph time and the sum is what launching and
  draining the kernels costs;
- each kernel's share of the critical path (``path_us_per_replay``): how much later than the kernel before
  it in its replay it ends, summed per name. A step's kernels each depend on the ones before, so
  these shares add up to the replay's span whatever PDL overlaps: the column to read when a change moves
  the graph time but not the per-kernel times.

Variants in one process share Triton's autotuning results, so each after the first starts in seconds.
Writes ``decode_profile.csv`` (one row per model, variant and kernel), ``decode_sequence.csv`` (the last
replay's kernels in launch order with their start, end and critical-path share, to tell which launch of a
layer is slow), ``decode_layer.csv`` (that replay folded into one layer: each launch slot's critical-path
share averaged over the layers, and what runs before and after them; see :func:`layer_table`) and
``decode_profile.json`` (graph time, summed kernel time, kernel count per replay), and prints a short table
per variant and the layer.
"""

from __future__ import annotations

import argparse
import ast
import collections
import importlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from bench.engine_bench import graph_replay_ms
from bench.model_shapes import MODELS, write_model
from bench.module_settings import module_settings
from bench.report import write_rows


def parse_variant(text: str) -> tuple[str, dict[str, str], dict[str, object]]:
    """``NAME=OP=IMPL,kernels.MODULE.NAME=VALUE,...`` (``engine.`` too; ``NAME=`` for nothing)
    -> (NAME, overrides, settings)."""
    name, _, spec = text.partition("=")
    overrides, settings = {}, {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise argparse.ArgumentTypeError(
                f"variant {text!r}: each item is OP=IMPL or kernels.MODULE.NAME=VALUE (or engine.), got {item!r}")
        if key.startswith(("kernels.", "engine.")):
            settings[key] = _setting(text, key, value)
        else:
            overrides[key] = value
    if not name:
        raise argparse.ArgumentTypeError(f"variant {text!r} needs a name before the first '='")
    return name, overrides, settings


def _setting(text: str, key: str, value: str) -> object:
    """The value for kernel-module setting ``key``, checked: the module and name exist, the type matches."""
    module_name, _, attr = key.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise argparse.ArgumentTypeError(f"variant {text!r}: no module {module_name!r} ({e})") from e
    if not hasattr(module, attr):
        raise argparse.ArgumentTypeError(f"variant {text!r}: {module_name} has no setting {attr!r}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError) as e:
        raise argparse.ArgumentTypeError(f"variant {text!r}: {value!r} is not a Python literal") from e
    current = getattr(module, attr)
    if type(parsed) is not type(current):
        raise argparse.ArgumentTypeError(
            f"variant {text!r}: {key} is a {type(current).__name__}, got {value!r} ({type(parsed).__name__})")
    return parsed


def steady_engine(model_dir: Path, overrides: dict[str, str]):
    """An engine with one decode graph (batch 1), after a 128-token prompt and 32 decoded tokens."""
    from engine.config import EngineConfig
    from engine.llm_engine import LLMEngine
    from engine.sampling_params import SamplingParams

    engine = LLMEngine(EngineConfig(model=str(model_dir), device="cuda", dtype=torch.bfloat16, max_model_len=4096,
                                    max_num_seqs=1, max_num_batched_tokens=512, enable_prefix_cache=False,
                                    op_overrides=overrides))
    engine.add_request(list(range(1000, 1128)), SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True))
    while engine.has_unfinished():
        engine.step()
    return engine


def profiled_replays(graph, replays: int):
    """``torch.profiler`` (CUDA activity) over ``replays`` replays of ``graph``, after one unprofiled replay."""
    from torch.profiler import ProfilerActivity, profile

    graph.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            graph.replay()
        torch.cuda.synchronize()
    return prof


def event_device_us(event) -> float:
    """An averaged profiler event's total device microseconds (the attribute's name depends on torch's version)."""
    device_us = getattr(event, "device_time_total", None)
    return device_us if device_us is not None else getattr(event, "cuda_time_total", 0.0)


def profile_graph(engine, replays: int) -> tuple[list[dict], list[dict]]:
    """Per kernel name: launches and device microseconds per replay of the batch-1 decode graph; and the
    last replay's kernels in launch order (which launch of a layer is slow: names carry no shapes)."""
    prof = profiled_replays(engine.runner.graphs.graphs[1], replays)
    rows = []
    for event in prof.key_averages():
        device_us = event_device_us(event)
        if not device_us or event.count < replays:
            continue
        rows.append({"kernel": event.key, "launches_per_replay": event.count / replays,
                     "us_per_launch": device_us / event.count, "us_per_replay": device_us / replays})
    total = sum(r["us_per_replay"] for r in rows) or 1.0
    path = critical_path(prof, replays)
    for r in rows:
        r["share"] = r["us_per_replay"] / total
        r["path_us_per_replay"] = path.get(r["kernel"], 0.0)
    return sorted(rows, key=lambda r: -r["us_per_replay"]), kernel_sequence(prof, replays)


def _replays(prof, replays: int) -> list[list]:
    """The profiled device kernels in start order, cut into ``replays`` equal runs (one per graph replay)."""
    kernels = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                     key=lambda e: e.time_range.start)
    n = len(kernels) // replays if replays else 0
    return [kernels[i * n:(i + 1) * n] for i in range(replays)] if n else []


def _ends_after(run) -> list[float]:
    """For each kernel of one replay, how much later than the kernel before it it ends (the first: from its own
    start): its share of the step's critical path. Under PDL a kernel starts early and waits, so its duration
    says little; but a step's kernels each depend on the ones before, so the step ends when its last kernel
    does, and these shares telescope to the replay's span (first start to last end). A kernel that ends
    before its predecessor gets a negative share, which the next one's makes up."""
    shares, previous = [], run[0].time_range.start if run else 0.0
    for e in run:
        end = e.time_range.start + e.time_range.elapsed_us()
        shares.append(end - previous)
        previous = end
    return shares


def kernel_sequence(prof, replays: int) -> list[dict]:
    """The last replay's device kernels in start order: position, name, microseconds, start and end (from the
    replay's first kernel start) and ``adds_us``, how much later than the kernel before it the kernel ends."""
    runs = _replays(prof, replays)
    last = runs[-1] if runs else []
    t0 = last[0].time_range.start if last else 0.0
    return [{"position": i, "kernel": e.name, "us": e.time_range.elapsed_us(), "start_us": e.time_range.start - t0,
             "end_us": e.time_range.start - t0 + e.time_range.elapsed_us(), "adds_us": adds}
            for i, (e, adds) in enumerate(zip(last, _ends_after(last), strict=True))]


def layer_table(sequence: list[dict], num_layers: int) -> list[dict]:
    """One replay's kernels (``kernel_sequence``) folded into one transformer layer: for each launch slot of a
    layer, its kernel and its critical-path share (``adds_us``) averaged over the layers, with the least and
    the most; then what runs before the first layer and after the last, as one row each. The layer's length
    is the distance between the first two launches of the first kernel that runs exactly ``num_layers`` times;
    the layers start as early as ``num_layers`` identical runs of that length allow. An empty list if the
    replay does not repeat so (a kernel that differs between layers, say)."""
    names = [r["kernel"] for r in sequence]
    launches = collections.Counter(names)
    anchors = [i for i, n in enumerate(names) if launches[n] == num_layers]
    if num_layers < 2 or not anchors:
        return []
    anchor = anchors[0]
    period = names.index(names[anchor], anchor + 1) - anchor

    def repeats(start: int) -> bool:
        end = start + num_layers * period
        one = names[start:start + period]
        return end <= len(names) and all(names[start + k * period:start + (k + 1) * period] == one
                                         for k in range(num_layers))

    first = next((s for s in range(max(0, anchor - period + 1), anchor + 1) if repeats(s)), None)
    if first is None:
        return []
    layers = [sequence[first + k * period:first + (k + 1) * period] for k in range(num_layers)]
    tail = sequence[first + num_layers * period:]
    head = sequence[:first]
    rows = [{"slot": "before", "kernel": f"{first} launches", "mean_adds_us": sum(r["adds_us"] for r in head),
             "min_adds_us": None, "max_adds_us": None}]
    for j in range(period):
        adds = [layer[j]["adds_us"] for layer in layers]
        rows.append({"slot": j, "kernel": names[first + j], "mean_adds_us": sum(adds) / len(adds),
                     "min_adds_us": min(adds), "max_adds_us": max(adds)})
    rows.append({"slot": "after", "kernel": f"{len(tail)} launches", "mean_adds_us": sum(r["adds_us"] for r in tail),
                 "min_adds_us": None, "max_adds_us": None})
    return rows


def print_layer(rows: list[dict]) -> None:
    if not rows:
        return
    print("    one layer, launch by launch (critical path us: mean, least, most over the layers):", flush=True)
    for r in rows:
        spread = "" if r["min_adds_us"] is None else f"  {r['min_adds_us']:6.2f} {r['max_adds_us']:6.2f}"
        print(f"    {r['slot']!s:>6s} {r['mean_adds_us']:8.2f}{spread}  {r['kernel'][:60]}", flush=True)


def critical_path(prof, replays: int) -> dict[str, float]:
    """Per kernel name, its mean share of a replay's critical path (see _ends_after), in microseconds."""
    runs = _replays(prof, replays)
    total: dict[str, float] = {}
    for run in runs:
        for e, adds in zip(run, _ends_after(run), strict=True):
            total[e.name] = total.get(e.name, 0.0) + adds
    return {name: us / len(runs) for name, us in total.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--models", nargs="+", default=["qwen2.5-0.5b", "llama-3.2-1b"], choices=sorted(MODELS))
    p.add_argument("--variant", action="append", type=parse_variant, default=None,
                   help="NAME=OP=IMPL,kernels.MODULE.NAME=VALUE,...: op overrides and kernel-module settings for "
                        "one variant (repeatable; default: engine=)")
    p.add_argument("--replays", type=int, default=50)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("decode_profile: needs a CUDA or ROCm GPU", file=sys.stderr)
        return 2
    variants = args.variant or [("engine", {}, {})]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table, sequences, layers = [], [], []
    summary = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            model_dir = write_model(Path(tmp) / model, MODELS[model], torch.device("cuda"))
            for name, overrides, settings in variants:
                with module_settings(settings):
                    engine = steady_engine(model_dir, overrides)
                    try:
                        graph_ms = graph_replay_ms(engine, 1)
                        rows, sequence = profile_graph(engine, args.replays)
                    finally:
                        engine.close()
                kernel_us = sum(r["us_per_replay"] for r in rows)
                launches = sum(r["launches_per_replay"] for r in rows)
                summary["runs"].append({"model": model, "variant": name, "overrides": overrides,
                                        "settings": {k: repr(v) for k, v in settings.items()}, "graph_ms": graph_ms,
                                        "kernel_us_per_replay": kernel_us, "launches_per_replay": launches})
                print(f"[{model} / {name}] graph {graph_ms * 1e3:.1f} us per replay; kernels {kernel_us:.1f} us "
                      f"in {launches:.0f} launches", flush=True)
                print("    us/replay  launches x us/launch   critical path us/replay  kernel", flush=True)
                for r in rows[:14]:
                    print(f"    {r['us_per_replay']:8.1f} us  {r['launches_per_replay']:5.0f} x "
                          f"{r['us_per_launch']:6.2f}   {r['path_us_per_replay']:8.1f}  {r['kernel'][:80]}",
                          flush=True)
                layer = layer_table(sequence, MODELS[model]["num_hidden_layers"])
                print_layer(layer)
                table += [{"model": model, "variant": name, **r} for r in rows]
                sequences += [{"model": model, "variant": name, **r} for r in sequence]
                layers += [{"model": model, "variant": name, **r} for r in layer]
                (out / "decode_profile.json").write_text(json.dumps(summary, indent=2))
                write_rows(table, out / "decode_profile.csv")
                write_rows(sequences, out / "decode_sequence.csv")
                write_rows(layers, out / "decode_layer.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
