"""End-to-end engine benchmark: single-stream decode and offline throughput against HF transformers.

    PYTHONPATH=. python3 bench/engine_bench.py --out bench/results/<gpu>

Models: Qwen2.5-0.5B- and Llama-3.2-1B-shaped (exact configs, random bf16 weights, written to a temporary
HF directory with a locally trained tokenizer: nothing is downloaded), loaded through the engine's normal
loader. For each model:

- single stream: a 128-token prompt, 256 new tokens (greedy, ignore_eos). Decode tok/s is compared with
  the bandwidth limit, ``copy bandwidth / weight bytes per token`` (the bytes every decode step must
  read: all weights except the embedding table, which is read once more as the LM head when tied),
  where the copy bandwidth is measured on this card in this run; and with HF transformers' eager
  ``generate`` (its default attention) on the same prompt.
- offline: nano-vllm's workload, 256 requests with input and output lengths uniform in 100..1024 and
  random token ids, ignore_eos; output tok/s against HF transformers' batched ``generate`` of the same
  requests (left-padded, each batch generating its longest output; only each request's own tokens are
  counted). HF runs on a subset (``--hf-requests``) and its rate is extrapolated: the output says so.
- TTFT and decode-step time percentiles from the engine runs.

Writes ``engine_bench.json`` and ``engine_bench.csv`` under ``--out`` (after every phase, so a run cut short
keeps what it measured), with the GPU name, the engine's backend, whether CUDA graphs were captured, and
per run how many decode steps replayed one (``graph_replays`` of ``decode_steps``).
Needs torch, triton, transformers, safetensors, tokenizers; not gguf or fastapi.

``--smoke`` checks this script on a CPU in seconds: the same steps (model writing, engine load, warm-up,
single stream, offline, HF baseline, bandwidth, files) on models of the same architectures shrunk to a
few layers of width 64 (:data:`SMOKE_SHAPE`), a handful of short requests, the torch backend and HF on
two requests. Its numbers mean nothing; it exists so that a GPU run does not fail on a bug in the script.
``--smoke --device cuda`` runs the same on a GPU (triton backend, CUDA graphs): a GPU-marked test does.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import faulthandler
import gc
import json
import logging
import random
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import torch

from bench.model_shapes import MODELS, SMOKE_SHAPE, decode_weight_bytes, write_model
from engine.commands.generate import op_override


@dataclasses.dataclass(frozen=True)
class Workload:
    """Request sizes: the GPU defaults, or :data:`SMOKE` for a CPU check of the script."""
    single_prompt_len: int = 128
    single_new_tokens: int = 256
    offline_min_len: int = 100      # offline input and output lengths are uniform in [min, max]
    offline_max_len: int = 1024
    max_model_len: int = 4096
    copy_bytes: int = 1 << 30       # buffer for the copy-bandwidth measurement


SMOKE = Workload(single_prompt_len=16, single_new_tokens=8, offline_min_len=4, offline_max_len=24,
                 max_model_len=128, copy_bytes=1 << 20)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the copy ceiling ---------------------------------------------------------------------------

def graph_replay_ms(engine, batch_size: int, reps: int = 200) -> float | None:
    """Device time of one replay of the engine's decode graph for ``batch_size`` (its inputs as the last
    decode step left them; prefix caching is off, so the KV slots it rewrites belong to no one), timed with
    CUDA events over ``reps`` back-to-back replays. None without CUDA graphs."""
    graphs = engine.runner.graphs
    if graphs is None or batch_size not in graphs.graphs:
        return None
    graph = graphs.graphs[batch_size]
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write counted), best of a few runs."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(10):
        synchronize(device)
        t = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() * src.element_size() / best


# --- engine runs --------------------------------------------------------------------------------

def run_engine(engine, requests: list[tuple[list[int], int]], graph_replays=None) -> dict:
    """Submit all requests at once and step to completion; timing per step and per request.

    Every request must end by its length limit (greedy, ignore_eos): a request that ends otherwise
    ("error", "timeout", ...) makes the run meaningless, so the finish reasons and the engine's error texts
    are printed (the log of a GPU run then says what failed) and RuntimeError is raised.
    """
    from engine.sampling_params import SamplingParams

    device = torch.device(engine.config.device)
    replays_before = graph_replays() if graph_replays else 0
    synchronize(device)
    start = time.perf_counter()
    ids = [engine.add_request(p, SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)) for p, n in requests]
    first_token: dict[str, float] = {}
    decode_steps: list[float] = []
    finish_reasons: Counter[str] = Counter()
    errors: dict[str, str] = {}
    out_tokens = 0
    while engine.has_unfinished():
        t = time.perf_counter()
        steps_before = engine.num_steps
        outs = engine.step()
        now = time.perf_counter()
        if engine.num_steps > steps_before:
            seqs, _, decodes = engine.last_step_shape
            if decodes == seqs:
                decode_steps.append(now - t)
        for o in outs:
            if o.finished:
                finish_reasons[str(o.finish_reason)] += 1
                if o.error:
                    errors[o.request_id] = o.error
            out_tokens += len(o.new_token_ids)
            if o.new_token_ids and o.request_id not in first_token:
                first_token[o.request_id] = now - start
    elapsed = time.perf_counter() - start
    if set(finish_reasons) != {"length"} or errors or len(first_token) != len(ids):
        # The engine keeps serving after a failed step; a benchmark must not count such a run.
        report = describe_failures(finish_reasons, errors, len(ids), len(first_token))
        print(report, file=sys.stderr, flush=True)
        raise RuntimeError(report)
    ttft = sorted(first_token[i] for i in ids)
    return {"elapsed_s": elapsed, "output_tokens": out_tokens, "output_tok_per_s": out_tokens / elapsed,
            "ttft_ms": _percentiles(ttft, 1000), "decode_step_ms": _percentiles(decode_steps, 1000),
            "decode_steps": len(decode_steps), "decode_time_s": sum(decode_steps),
            "graph_replays": (graph_replays() - replays_before) if graph_replays else 0,
            "finish_reasons": dict(finish_reasons)}


def describe_failures(finish_reasons: Counter, errors: dict[str, str], num_requests: int, num_started: int) -> str:
    """What went wrong in a run: finish reasons by count, and each distinct engine error with how often."""
    lines = [f"engine run failed: {num_requests} requests, {num_started} produced a token; finish reasons: "
             + ", ".join(f"{reason}={count}" for reason, count in finish_reasons.most_common())]
    for text, count in Counter(errors.values()).most_common(5):
        lines.append(f"  {count} request(s) failed with: {text}")
    return "\n".join(lines)


def _percentiles(values: list[float], scale: float) -> dict:
    if not values:
        return {}
    v = sorted(values)
    pick = lambda q: v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))] * scale
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "mean": statistics.fmean(v) * scale}


# --- main -----------------------------------------------------------------------------------------

def random_requests(rng: random.Random, vocab: int, count: int, work: Workload,
                    output_len: int | None = None) -> list[tuple[list[int], int]]:
    """``count`` prompts of random token ids with lengths uniform in the workload's offline range, each
    asking for ``output_len`` tokens (default: also uniform in that range)."""
    lo, hi = work.offline_min_len, work.offline_max_len
    return [([rng.randrange(vocab) for _ in range(rng.randint(lo, hi))],
             output_len if output_len is not None else rng.randint(lo, hi)) for _ in range(count)]


def count_graph_replays(engine):
    """A function giving how many decode steps a CUDA graph has served so far (replayed then, or run one
    step ahead: engine.decode_graphs counts both); always 0 where no graph was captured."""
    graphs = engine.runner.graphs
    return (lambda: graphs.steps_served) if graphs is not None else (lambda: 0)


def engine_facts(engine) -> dict:
    """How the engine ran: backend, device, dtype, and whether decode steps replay CUDA graphs."""
    graphs = engine.runner.graphs
    return {"backend": engine.config.backend, "device": str(engine.config.device),
            "dtype": str(engine.dtype).removeprefix("torch."), "enforce_eager": engine.config.enforce_eager,
            "cuda_graphs": graphs is not None, "graph_batch_sizes": list(graphs.sizes) if graphs is not None else []}


def bench_model(name: str, config: dict, workdir: Path, args, work: Workload, result: dict, save) -> None:
    """Fill ``result`` phase by phase, calling ``save()`` after each, so that a run cut short or failing in a
    later phase keeps the earlier phases' numbers. An HF failure is recorded (``hf.error``), not raised."""
    from engine.config import EngineConfig
    from engine.llm_engine import LLMEngine

    device = torch.device(args.device)
    rng = random.Random(0)
    vocab = config["vocab_size"]
    model_dir = write_model(workdir / name, config, device)
    print(f"[{name}] model written; loading the engine", file=sys.stderr, flush=True)
    t = time.perf_counter()
    engine = LLMEngine(EngineConfig(model=str(model_dir), backend=args.backend, device=device, dtype=torch.bfloat16,
                                    max_model_len=work.max_model_len, max_num_seqs=args.max_num_seqs,
                                    max_num_batched_tokens=args.max_batched_tokens,
                                    enforce_eager=args.enforce_eager, enable_prefix_cache=False,
                                    op_overrides=args.ops))
    load_s = time.perf_counter() - t
    result.update(engine=engine_facts(engine), engine_load_s=load_s, kv_blocks=engine.runner.num_blocks,
                  weight_bytes_per_token=decode_weight_bytes(config))
    print(f"[{name}] engine: {result['engine']}", file=sys.stderr, flush=True)
    try:  # closed on the way out, failed or not: its memory must be free for the next model
        replays = count_graph_replays(engine)

        # Warm-up: the same mix of prompt lengths as the offline run, so that the autotuner meets the prefill
        # and mixed-step shapes (token-count buckets) here rather than inside the timed runs.
        run_engine(engine, random_requests(rng, vocab, args.num_requests, work, output_len=4))
        prompt = [rng.randrange(vocab) for _ in range(work.single_prompt_len)]
        run_engine(engine, [(prompt, 16)])

        new_tokens = work.single_new_tokens
        single = run_engine(engine, [(prompt, new_tokens)], replays)
        if single["output_tokens"] != new_tokens:
            raise RuntimeError(f"single stream produced {single['output_tokens']} tokens instead of {new_tokens}")
        decode_tok_s = single["decode_steps"] / single["decode_time_s"]
        bw = copy_bandwidth(device, work.copy_bytes)
        limit = bw / result["weight_bytes_per_token"]
        result["single_stream"] = {**single, "decode_tok_per_s": decode_tok_s, "copy_bandwidth_GBps": bw / 1e9,
                                   "bandwidth_limit_tok_per_s": limit, "fraction_of_limit": decode_tok_s / limit}
        print(f"[{name}] single stream: {decode_tok_s:.0f} tok/s decode ({decode_tok_s / limit:.0%} of the "
              f"{limit:.0f} tok/s bandwidth limit)", file=sys.stderr, flush=True)
        replay_ms = graph_replay_ms(engine, 1)
        if replay_ms is not None:  # the step's device part alone: the rest of a step is host work and waits
            result["single_stream"]["graph_replay_ms"] = replay_ms
            print(f"[{name}] batch-1 decode graph alone: {replay_ms:.3f} ms per replay "
                  f"(step p50 {single['decode_step_ms']['p50']:.3f} ms)", file=sys.stderr, flush=True)
        save()

        requests = random_requests(rng, vocab, args.num_requests, work)
        offline = run_engine(engine, requests, replays)
        result["offline"] = offline
        print(f"[{name}] offline: {offline['output_tok_per_s']:.0f} output tok/s over {len(requests)} requests",
              file=sys.stderr, flush=True)
        save()
    finally:
        engine.close()
    del engine
    empty_cache(device)
    if args.skip_hf:
        return
    from bench.hf_baseline import hf_baseline

    try:
        hf_baseline(model_dir, prompt, requests, device, args, result)
    except Exception as err:  # the baseline is secondary: record its failure, keep the engine's numbers
        traceback.print_exc()
        result["hf"] = {"error": f"{type(err).__name__}: {err}"}
    empty_cache(device)


def empty_cache(device: torch.device) -> None:
    """Give a dropped engine's or model's memory back before the next one sizes its KV cache from what is free
    (the runner and its CUDA graphs refer to each other, so only the cycle collector frees them)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for engine_bench.json and engine_bench.csv")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--num-requests", type=int, default=256)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--max-batched-tokens", type=int, default=16384)
    parser.add_argument("--hf-requests", type=int, default=32, help="requests HF runs (its rate is extrapolated)")
    parser.add_argument("--hf-batch", type=int, default=32)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--op", action="append", default=[], type=op_override, metavar="NAME=IMPL",
                        help="run op NAME with the registered implementation IMPL (repeatable)")
    parser.add_argument("--backend", choices=["triton", "torch"], default=None,
                        help="the engine's ops (default: triton on a GPU, torch with --smoke)")
    parser.add_argument("--smoke", action="store_true",
                        help="a check of this script in seconds: toy-width models, a few short requests; on the "
                             "CPU (torch backend) unless --device cuda")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None,
                        help="default: cuda, or cpu with --smoke (cpu runs only with --smoke)")
    args = parser.parse_args(argv)
    args.ops = dict(args.op)
    if args.device == "cpu" and not args.smoke:
        parser.error("--device cpu is for --smoke runs only: CPU numbers say nothing about the engine on a GPU")
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    if args.device == "cpu":
        args.backend = args.backend or "torch"
    if args.smoke:
        args.num_requests, args.hf_requests, args.hf_batch = 4, 2, 2
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("engine_bench needs a GPU (--smoke checks the script on a CPU)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("engine").setLevel(logging.INFO)  # start-up phases: KV cache, warm-up, graph capture
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = "cpu" if args.device == "cpu" else torch.cuda.get_device_name(0)
    gpu += " (smoke)" if args.smoke else ""
    work = SMOKE if args.smoke else Workload()
    report = {"gpu": gpu, "torch": torch.__version__, "smoke": args.smoke, "workload": dataclasses.asdict(work),
              "op_overrides": args.ops, "results": []}

    def save() -> None:  # after every phase: a run cut short (the GPU call's time limit) keeps what it measured
        (out / "engine_bench.json").write_text(json.dumps(report, indent=2))
        write_csv(out / "engine_bench.csv", gpu, report["results"])

    failed = []
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        for name in args.models:
            config = dict(MODELS[name], **SMOKE_SHAPE) if args.smoke else MODELS[name]
            result = {"model": name}
            report["results"].append(result)
            try:
                bench_model(name, config, Path(tmp), args, work, result, save)
            except Exception as err:  # one model's failure must not cost the next model's numbers
                traceback.print_exc()
                result["error"] = f"{type(err).__name__}: {err}"
            if "error" in result or "error" in result.get("hf", {}):
                failed.append(name)
            save()
            empty_cache(torch.device(args.device))
            if "error" in result and args.device == "cuda" and not args.enforce_eager:
                rerun_eagerly(name, config, Path(tmp), args, work, report, save)
    print(json.dumps(report, indent=2))
    if failed:
        print(f"engine_bench: failed for {', '.join(failed)} (see 'error' in the JSON and the traceback above)",
              file=sys.stderr)
        return 1
    return 0


def rerun_eagerly(name: str, config: dict, workdir: Path, args, work: Workload, report: dict, save) -> None:
    """After a failure with CUDA graphs, the same model and workload with ``enforce_eager``: one run then
    tells whether the fault lies in graph capture and replay or in the kernels themselves. Recorded as a
    separate result (``rerun``); the failed run stays failed."""
    eager_args = argparse.Namespace(**{**vars(args), "enforce_eager": True, "skip_hf": True})
    result = {"model": name, "rerun": "enforce_eager, after the run with CUDA graphs failed"}
    report["results"].append(result)
    print(f"[{name}] rerunning without CUDA graphs to locate the failure", file=sys.stderr, flush=True)
    try:
        bench_model(name, config, workdir, eager_args, work, result, save)
    except Exception as err:  # the rerun is a diagnosis: its failure is recorded like the first run's
        traceback.print_exc()
        result["error"] = f"{type(err).__name__}: {err}"
    save()
    empty_cache(torch.device(args.device))


CSV_COLUMNS = ["gpu", "model", "backend", "cuda_graphs", "metric", "value"]


def write_csv(path: Path, gpu: str, results: list[dict]) -> None:
    """One row per (model, metric) measured so far; the engine's backend and CUDA-graph use on every row."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in results:
            s, o, hf = r.get("single_stream"), r.get("offline"), r.get("hf", {})
            rows = []
            if s:
                rows += [("single_decode_tok_per_s", s["decode_tok_per_s"]),
                         ("bandwidth_limit_tok_per_s", s["bandwidth_limit_tok_per_s"]),
                         ("fraction_of_bandwidth_limit", s["fraction_of_limit"]),
                         ("single_ttft_ms", s["ttft_ms"].get("p50")),
                         ("single_step_ms_p50", s["decode_step_ms"].get("p50"))]
            if o:
                rows += [("offline_output_tok_per_s", o["output_tok_per_s"]),
                         ("offline_ttft_ms_p50", o["ttft_ms"]["p50"]),
                         ("offline_ttft_ms_p99", o["ttft_ms"]["p99"]),
                         ("offline_decode_step_ms_p50", o["decode_step_ms"].get("p50")),
                         ("offline_decode_step_ms_p99", o["decode_step_ms"].get("p99"))]
            if "offline" in hf:
                rows += [("hf_single_tok_per_s", hf["single_stream_tok_per_s"]),
                         ("hf_offline_tok_per_s_extrapolated", hf["offline"]["output_tok_per_s"]),
                         ("speedup_single_stream", r["speedup_single_stream"]),
                         ("speedup_offline", r["speedup_offline"])]
            engine = r.get("engine", {})
            for metric, value in rows:
                w.writerow([gpu, r["model"], engine.get("backend", ""), engine.get("cuda_graphs", ""), metric, value])

if __name__ == "__main__":
    # A run stopped by its time limit (SIGTERM from `timeout`) prints where every thread was.
    faulthandler.register(signal.SIGTERM, all_threads=True, chain=True)
    sys.exit(main())
