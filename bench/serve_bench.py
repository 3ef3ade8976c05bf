"""Serving benchmark: streaming HTTP clients against a tritonforge server, and the same workload offline.

    PYTHONPATH=. python3 bench/serve_bench.py --spawn-model qwen2.5-0.5b --concurrency 1,16,64 --out DIR
    PYTHONPATH=. python3 bench/serve_bench.py --url http://127.0.0.1:8000 --concurrency 16 --out DIR

``--spawn-model`` starts ``tritonforge serve`` itself on a loopback port (a subprocess, so the load
generator never competes with the engine loop for the GIL) on a model of that shape from
``bench/engine_bench.py`` (random bf16 weights, nothing downloaded) or on a local model directory.
Requests are random token-id prompts of ``--input-len`` tokens asking for exactly ``--output-len``
tokens (greedy, ignore_eos), sent through ``POST /generate/stream``, which reports each engine step's
token ids: so TTFT and inter-token latency are per token, even where the random model's tokens decode to
no text. For every concurrency (requests in flight) and request rate (Poisson arrivals; ``inf`` = all at
once, still capped by the concurrency) it reports request throughput, output tok/s, TTFT, inter-token
latency (ITL), time per output token (TPOT) and end-to-end latency percentiles. The clients run in
several processes at high concurrency (``--client-procs``), so that parsing the streams never caps the rate.

With ``--spawn-model`` the server is then stopped and the same requests run offline through
``LLMEngine`` in this process with the same engine settings and the same cap on requests in flight;
``server_vs_offline`` is server output tok/s / offline output tok/s (target: >= 0.7 at 64 clients).
Writes ``serve_bench.json`` and ``serve_bench.csv`` under ``--out`` (rewritten after every level, so a run
cut short keeps what it measured), with the GPU name, and the spawned server's log as
``serve_bench_server.log``. Exits 1 if any request failed (the first errors are in the JSON and printed).
Needs httpx; the spawned server needs fastapi and uvicorn.

``--smoke`` checks this script on a CPU in seconds: the same steps (model writing, server start, HTTP
levels, offline comparison, files) with a model of the chosen architecture shrunk to toy width
(``model_shapes.SMOKE_SHAPE``), 16-token prompts asking for 8 tokens, the torch backend on the CPU and
one request per client per level. Its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.serve_spawn import missing_server_modules, server_stats, spawn_server, stop_server, wait_healthy
from engine.commands.generate import op_override

# --- the workload -------------------------------------------------------------------------------

def make_requests(count: int, input_len: int, output_len: int, vocab: int, seed: int) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    # Ids above the few special tokens of the local tokenizers; the model's vocabulary bounds the rest.
    return [([rng.randrange(8, vocab) for _ in range(input_len)], output_len) for _ in range(count)]


def arrival_gaps(count: int, rate: float, seed: int) -> list[float]:
    if rate == float("inf"):
        return [0.0] * count
    rng = random.Random(seed)
    return [rng.expovariate(rate) for _ in range(count)]


# --- the HTTP load generator --------------------------------------------------------------------

CLIENT_START_S = 3.0  # client processes start this long after launch, together (spawning and importing first)

async def one_request(client, prompt: list[int], output_len: int, timeout: float) -> dict:
    body = {"prompt": prompt, "max_tokens": output_len, "temperature": 0, "ignore_eos": True, "timeout": timeout}
    start = time.perf_counter()
    token_times: list[float] = []
    record = {"output_tokens": 0, "error": None}
    try:
        async with client.stream("POST", "/generate/stream", json=body) as response:
            if response.status_code != 200:
                record["error"] = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return record
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    record["error"] = event["error"].get("message")
                    break
                now = time.perf_counter()
                token_times += [now] * len(event["token_ids"])
    except Exception as err:  # the benchmark records any client-side failure and goes on
        record["error"] = f"{type(err).__name__}: {err}"
    end = time.perf_counter()
    record["output_tokens"] = len(token_times)
    if token_times:
        record["ttft"] = token_times[0] - start
        record["itl"] = [b - a for a, b in itertools.pairwise(token_times)]
        record["e2e"] = end - start
    return record


async def client_records(url: str, requests, concurrency: int, rate: float, seed: int, timeout: float,
                         go_at: float | None = None) -> tuple[list[dict], float, float]:
    """One client process's share: its requests' records, and when it started and ended (perf_counter,
    a clock shared by the processes of one machine). ``go_at``: start no earlier than this."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    gate = asyncio.Semaphore(concurrency)
    gaps = arrival_gaps(len(requests), rate, seed)

    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout + 60), limits=limits) as client:
        async def gated(prompt, n):
            async with gate:
                return await one_request(client, prompt, n, timeout)

        if go_at is not None:
            await asyncio.sleep(max(0.0, go_at - time.perf_counter()))
        start = time.perf_counter()
        tasks = []
        for (prompt, n), gap in zip(requests, gaps, strict=True):
            if gap:
                await asyncio.sleep(gap)
            tasks.append(asyncio.create_task(gated(prompt, n)))
        records = await asyncio.gather(*tasks)
        return records, start, time.perf_counter()


def _client_process(share: tuple) -> tuple[list[dict], float, float]:
    return asyncio.run(client_records(*share))


def client_procs_for(concurrency: int, requested: int | None) -> int:
    """Load-generator processes: as asked, else one per 8 streams (at most 8). One asyncio client parses
    about 13k streamed tokens/s per core, short of what 64 streams of a small model reach on a GPU."""
    procs = requested if requested else min(8, max(1, concurrency // 8))
    return max(1, min(procs, concurrency))


def run_level(url: str, requests, concurrency: int, rate: float, seed: int, timeout: float,
              procs: int = 1) -> dict:
    """All requests at most ``concurrency`` in flight, spread over ``procs`` client processes (each takes
    every procs-th request, its share of the concurrency and of the arrival rate); they start together."""
    procs = max(1, min(procs, concurrency, len(requests)))
    if procs == 1:
        records, start, end = asyncio.run(client_records(url, requests, concurrency, rate, seed, timeout))
        return summarize(records, end - start)
    import concurrent.futures
    import multiprocessing

    go_at = time.perf_counter() + CLIENT_START_S
    shares = [(url, requests[i::procs], len(range(i, concurrency, procs)), rate / procs, seed + i, timeout, go_at)
              for i in range(procs)]
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold CUDA or threads
    with concurrent.futures.ProcessPoolExecutor(procs, mp_context=context) as pool:
        parts = list(pool.map(_client_process, shares))
    records = [r for part, _, _ in parts for r in part]
    return summarize(records, max(end for _, _, end in parts) - min(start for _, start, _ in parts))


def summarize(records: list[dict], duration: float) -> dict:
    done = [r for r in records if r["error"] is None and "ttft" in r]
    tokens = sum(r["output_tokens"] for r in done)
    tpot = [(r["e2e"] - r["ttft"]) / (r["output_tokens"] - 1) for r in done if r["output_tokens"] > 1]
    errors = [r["error"] for r in records if r["error"] is not None]
    return {"completed": len(done), "failed": len(errors), "first_errors": errors[:3], "duration_s": duration,
            "request_per_s": len(done) / duration, "output_tok_per_s": tokens / duration, "output_tokens": tokens,
            "ttft_ms": percentiles([r["ttft"] for r in done]),
            "itl_ms": percentiles([gap for r in done for gap in r["itl"]]),
            "tpot_ms": percentiles(tpot), "e2e_ms": percentiles([r["e2e"] for r in done])}


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    v = sorted(values)
    pick = lambda q: 1000 * v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "mean": 1000 * statistics.fmean(v)}


# --- the offline run of the same workload ---------------------------------------------------------

def run_offline(engine, requests, concurrency: int) -> dict:
    """The same requests through LLMEngine.step, at most ``concurrency`` in flight (a new one starts when one
    finishes), as the HTTP clients do."""
    import torch

    from engine.sampling_params import SamplingParams

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    pending = list(requests)
    in_flight, tokens = 0, 0
    sync()
    start = time.perf_counter()
    while pending or engine.has_unfinished():
        while pending and in_flight < concurrency:
            prompt, n = pending.pop(0)
            engine.add_request(prompt, SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True))
            in_flight += 1
        for out in engine.step():
            tokens += len(out.new_token_ids)
            in_flight -= out.finished
    sync()
    duration = time.perf_counter() - start
    return {"duration_s": duration, "output_tokens": tokens, "output_tok_per_s": tokens / duration,
            "request_per_s": len(requests) / duration}


# --- the model -----------------------------------------------------------------------------------

def engine_settings(args) -> dict:
    settings = {"dtype": args.dtype, "max_model_len": args.max_model_len, "max_num_seqs": args.max_num_seqs,
                "max_num_batched_tokens": args.max_batched_tokens, "num_kv_blocks": args.num_kv_blocks,
                "enforce_eager": args.enforce_eager, "backend": args.backend, "device": args.device}
    return {k: v for k, v in settings.items() if v not in (None, False)}


def model_for(name: str, workdir: Path, smoke: bool) -> tuple[Path, int]:
    """A model directory and its vocabulary size: a local directory, or a shape from engine_bench (shrunk
    to toy width for a smoke run)."""
    from bench.model_shapes import MODELS, SMOKE_SHAPE, write_model

    if Path(name).is_dir():
        config = json.loads((Path(name) / "config.json").read_text())
        return Path(name), int(config["vocab_size"])
    if name not in MODELS:
        raise SystemExit(f"--spawn-model: {name!r} is neither a model directory nor one of {sorted(MODELS)}")
    import torch

    config = dict(MODELS[name], **SMOKE_SHAPE) if smoke else MODELS[name]
    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    model_dir = write_model(workdir / name, config, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the server sizes its KV cache from free memory: hold none of it here
    return model_dir, config["vocab_size"]


# --- main ----------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server (no offline comparison then)")
    where.add_argument("--spawn-model", help="start a server on this engine_bench shape or model directory")
    p.add_argument("--out", required=True, help="directory for serve_bench.json and serve_bench.csv")
    p.add_argument("--concurrency", default="1,16,64", help="comma-separated requests in flight")
    p.add_argument("--request-rate", default="inf", help="comma-separated requests/s (Poisson); inf = no pacing")
    p.add_argument("--num-prompts", type=int, default=None, help="requests per level (default 4 x concurrency, >= 8)")
    p.add_argument("--input-len", type=int, default=256)
    p.add_argument("--output-len", type=int, default=256)
    p.add_argument("--vocab", type=int, default=None, help="prompt token-id range with --url (default 256)")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout sent to the server")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--client-procs", type=int, default=None,
                   help="load-generator processes per level (default: one per 8 streams, at most 8)")
    p.add_argument("--skip-offline", action="store_true")
    p.add_argument("--stream-interval", type=float, default=0.0,
                   help="the spawned server's --stream-interval (least seconds between writes of one stream)")
    p.add_argument("--engine-in-process", action="store_true",
                   help="the spawned server runs its engine in its own process (default: in a child process)")
    p.add_argument("--switch-interval", type=float, default=None,
                   help="the spawned server's --switch-interval (its GIL switch interval; default: the server's)")
    engine = p.add_argument_group("engine settings (spawned server and offline run alike)")
    engine.add_argument("--dtype", default=None, help="default bfloat16 on a GPU, the model's on a CPU")
    engine.add_argument("--max-model-len", type=int, default=4096)
    engine.add_argument("--max-num-seqs", type=int, default=256)
    engine.add_argument("--max-batched-tokens", type=int, default=16384)
    engine.add_argument("--num-kv-blocks", type=int, default=None)
    engine.add_argument("--enforce-eager", action="store_true")
    engine.add_argument("--backend", default=None)
    engine.add_argument("--device", default=None)
    engine.add_argument("--op", action="append", default=[], type=op_override, metavar="NAME=IMPL",
                        help="run op NAME with the registered implementation IMPL (repeatable), server and offline")
    p.add_argument("--smoke", action="store_true",
                   help="a CPU check of this script: toy-width model, short requests, torch backend")
    args = p.parse_args(argv)
    args.ops = dict(args.op)
    if args.smoke:
        args.input_len, args.output_len, args.max_model_len = 16, 8, 128
        args.device, args.backend = "cpu", args.backend or "torch"
    return args


def prompts_for(concurrency: int, args) -> int:
    """Requests per level: ``--num-prompts``, else 4 per client (at least 8); one per client in a smoke run."""
    if args.num_prompts:
        return args.num_prompts
    return concurrency if args.smoke else max(8, 4 * concurrency)


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    levels = [int(c) for c in args.concurrency.split(",")]
    rates = [float(r) for r in args.request_rate.split(",")]
    if args.spawn_model and (missing := missing_server_modules()):
        print(f"serve_bench: the server cannot import {'; '.join(missing)}; install them or carry their wheels "
              "(README: Running on a lent GPU)", file=sys.stderr)
        return 2
    # A SIGTERM (a `timeout` around this script) unwinds through the `finally` below, stopping the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    gpu = "cpu (smoke)" if args.smoke else torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    if args.dtype is None and torch.cuda.is_available() and not args.smoke:
        args.dtype = "bfloat16"
    report = {"gpu": gpu, "torch": torch.__version__, "smoke": args.smoke, "input_len": args.input_len,
              "output_len": args.output_len, "levels": []}
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        proc = None
        if args.spawn_model:
            model_dir, vocab = model_for(args.spawn_model, Path(tmp), args.smoke)
            settings = engine_settings(args)
            report.update(model=args.spawn_model, engine_settings=settings, stream_interval_s=args.stream_interval,
                          switch_interval_s=args.switch_interval, engine_in_process=args.engine_in_process,
                          op_overrides=args.ops)
            log_path = out / "serve_bench_server.log"
            proc, url = spawn_server(model_dir, settings, log_path, args.stream_interval, args.ops,
                                     args.switch_interval, args.engine_in_process)
            print(f"server starting at {url} (log: {log_path})", file=sys.stderr, flush=True)
        else:
            url, vocab = args.url.rstrip("/"), args.vocab or 256
            report.update(model=url)
        try:
            if proc is not None:
                wait_healthy(url, proc, log_path)
            warm = make_requests(max(levels), args.input_len, 8, vocab, args.seed + 99)
            run_level(url, warm, max(levels), float("inf"), args.seed, args.timeout)
            for concurrency in levels:
                count = prompts_for(concurrency, args)
                requests = make_requests(count, args.input_len, args.output_len, vocab, args.seed + concurrency)
                for rate in rates:
                    procs = client_procs_for(concurrency, args.client_procs)
                    result = run_level(url, requests, concurrency, rate, args.seed, args.timeout, procs)
                    report["levels"].append({"concurrency": concurrency, "request_rate": str(rate),
                                             "num_prompts": count, "client_procs": procs, "server": result})
                    write_report(report, out)
                    print(f"c={concurrency:<4} rate={rate:<5} {result['output_tok_per_s']:9.1f} out tok/s  "
                          f"TTFT p50 {result['ttft_ms'].get('p50', float('nan')):8.1f} ms  ITL p50 "
                          f"{result['itl_ms'].get('p50', float('nan')):7.2f} ms  failed {result['failed']}",
                          file=sys.stderr, flush=True)
            report["server_stats"] = server_stats(url)
        finally:
            if proc is not None:
                stop_server(proc)
        if args.spawn_model and not args.skip_offline:
            offline_comparison(report, model_dir, vocab, levels, args, out)
    write_report(report, out, final=True)
    failed = [e for lv in report["levels"] for e in lv["server"]["first_errors"]]
    if failed:
        print(f"serve_bench: {sum(lv['server']['failed'] for lv in report['levels'])} requests failed; first "
              f"errors: {failed[:3]}", file=sys.stderr)
        return 1
    return 0


def offline_comparison(report: dict, model_dir: Path, vocab: int, levels: list[int], args, out: Path) -> None:
    from engine.config import EngineConfig
    from engine.llm_engine import LLMEngine

    engine = LLMEngine(EngineConfig(model=str(model_dir), op_overrides=args.ops, **engine_settings(args)))
    report["offline_engine"] = {"backend": engine.config.backend, "device": str(engine.config.device),
                                "cuda_graphs": engine.runner.graphs is not None}
    run_offline(engine, make_requests(max(levels), args.input_len, 8, vocab, args.seed + 99), max(levels))
    for concurrency in levels:
        count = prompts_for(concurrency, args)
        offline = run_offline(engine, make_requests(count, args.input_len, args.output_len, vocab,
                                                    args.seed + concurrency), concurrency)
        for level in report["levels"]:
            if level["concurrency"] == concurrency:
                level["offline"] = offline
                level["server_vs_offline"] = level["server"]["output_tok_per_s"] / offline["output_tok_per_s"]
        write_report(report, out)
        print(f"c={concurrency:<4} offline {offline['output_tok_per_s']:9.1f} out tok/s", file=sys.stderr, flush=True)


def write_report(report: dict, out: Path, final: bool = False) -> None:
    """Both files from what is measured so far; the final call also prints the summary."""
    (out / "serve_bench.json").write_text(json.dumps(report, indent=2))
    with open(out / "serve_bench.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["gpu", "model", "concurrency", "request_rate", "num_prompts", "completed", "failed",
                    "request_per_s", "output_tok_per_s", "offline_output_tok_per_s", "server_vs_offline",
                    "ttft_ms_p50", "ttft_ms_p99", "itl_ms_p50", "itl_ms_p99", "tpot_ms_mean", "e2e_ms_p50"])
        for lv in report["levels"]:
            s = lv["server"]
            w.writerow([report["gpu"], report["model"], lv["concurrency"], lv["request_rate"], lv["num_prompts"],
                        s["completed"], s["failed"], s["request_per_s"], s["output_tok_per_s"],
                        lv.get("offline", {}).get("output_tok_per_s", ""), lv.get("server_vs_offline", ""),
                        s["ttft_ms"].get("p50"), s["ttft_ms"].get("p99"), s["itl_ms"].get("p50"),
                        s["itl_ms"].get("p99"), s["tpot_ms"].get("mean"), s["e2e_ms"].get("p50")])
    if not final:
        return
    print(json.dumps({"gpu": report["gpu"], "levels": [
        {k: lv.get(k) for k in ("concurrency", "request_rate", "server_vs_offline")}
        | {"server_tok_s": lv["server"]["output_tok_per_s"], "offline_tok_s": lv.get("offline", {}).get(
            "output_tok_per_s")} for lv in report["levels"]]}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
