"""The server's own CPU cost per token: streaming clients against the real app over a fake engine.

    PYTHONPATH=. python3 bench/serve_overhead.py --concurrency 16,64 --device-ms 3 --out DIR

The server is ``python -m bench.fake_engine`` (the real ``create_app`` and ``AsyncEngine`` under uvicorn, as
``tritonforge serve`` runs them, over :class:`bench.fake_engine.FakeEngine`), spawned on a loopback port;
the clients, in this process, stream ``POST /generate/stream`` over plain asyncio sockets and count the
events (``--client raw``, the default: a few µs per token, so the server is what is measured) or through
``bench/serve_bench.py``'s httpx client (``--client httpx``, whose own cost per token is several times the
server's: on few cores it can be the limit). Every fake
step takes ``--device-ms`` (the GIL released, as a GPU step) plus ``--host-ms`` (the GIL held, as the
engine's own Python), so at concurrency c the ideal is ``c / step`` tokens per second; the report gives
what the server reached against that, and the mean time between the engine's steps (from ``/stats``).
The gap is the HTTP side's cost: the event loop's routes, SSE encoding and writes, and the GIL hand-over
between the loop and the engine thread.

The clients take CPU too: on a machine with few cores they compete with the server for it, so the
CPU time per wall second of both processes is reported (the server near 1.0: its one GIL is the limit;
the client near 1.0: the load generator may be). A realistic GPU step of a small model is mostly host
work: e.g. ``--device-ms 0.5 --host-ms 2.4`` for the 2.9 ms decode step of a 0.5B model at 64 sequences.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench.serve_bench import make_requests, percentiles, run_level
from bench.serve_spawn import free_port, server_stats, start_logged, stop_server, wait_healthy


def spawn_fake_server(args, log_path: Path):
    port = free_port()
    cmd = [sys.executable, "-m", "bench.fake_engine", "--port", str(port), "--device-ms", str(args.device_ms),
           "--host-ms", str(args.host_ms), "--stream-interval", str(args.stream_interval),
           "--log-level", args.log_level] + (["--switch-interval", str(args.switch_interval)] if args.switch_interval
                                              else [])
    return start_logged(cmd, log_path), f"http://127.0.0.1:{port}"


def measure_level(url: str, pid: int, concurrency: int, args) -> dict:
    count = args.num_prompts or 2 * concurrency
    requests = make_requests(count, args.input_len, args.output_len, 32000, args.seed + concurrency)
    steps_before = server_stats(url).get("num_steps", 0)
    cpu_before, server_before = _cpu_seconds(), _process_cpu_seconds(pid)
    if args.client == "httpx":
        result = run_level(url, requests, concurrency, float("inf"), args.seed, timeout=600)
    else:
        result = asyncio.run(raw_level(url, requests, concurrency))
    client_cpu, server_cpu = _cpu_seconds() - cpu_before, _process_cpu_seconds(pid) - server_before
    steps = server_stats(url).get("num_steps", 0) - steps_before
    step_s = (args.device_ms + args.host_ms) / 1000
    ideal = concurrency / step_s
    duration = result["duration_s"]
    return {"concurrency": concurrency, "client": args.client, "ideal_tok_per_s": ideal,
            "tok_per_s": result["output_tok_per_s"], "fraction_of_ideal": result["output_tok_per_s"] / ideal,
            "steps": steps, "step_interval_ms": 1000 * duration / max(1, steps), "fake_step_ms": 1000 * step_s,
            "tokens_per_step": result["output_tokens"] / max(1, steps),
            "client_cpu_per_s": client_cpu / duration, "server_cpu_per_s": server_cpu / duration,
            "failed": result["failed"], "first_errors": result["first_errors"], "itl_ms": result.get("itl_ms", {}),
            "ttft_ms": result["ttft_ms"]}


async def raw_level(url: str, requests, concurrency: int) -> dict:
    """``POST /generate/stream`` over plain asyncio streams, counting events without parsing them: a client
    that costs far less CPU per token than httpx (each fake-engine event is one token)."""
    host, port = url.removeprefix("http://").split(":")
    gate = asyncio.Semaphore(concurrency)

    async def one(prompt: list[int], output_len: int) -> dict:
        async with gate:
            body = json.dumps({"prompt": prompt, "max_tokens": output_len, "ignore_eos": True}).encode()
            start = time.perf_counter()
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"POST /generate/stream HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            head = await reader.readuntil(b"\r\n\r\n")
            record = {"output_tokens": 0, "error": None if head.startswith(b"HTTP/1.1 200") else head[:100]}
            tail = b""
            while record["error"] is None:
                data = await reader.read(65536)
                if not data:
                    record["error"] = "connection closed before [DONE]"
                    break
                if not record["output_tokens"]:
                    record["ttft"] = time.perf_counter() - start
                seen = tail + data   # an event may straddle two reads; one wholly in ``tail`` was counted
                record["output_tokens"] += seen.count(b"data: {") - tail.count(b"data: {")
                if b"data: [DONE]" in seen:
                    break
                tail = seen[-16:]
            writer.close()
            if record["error"] is None and record["output_tokens"] != output_len:
                record["error"] = f"{record['output_tokens']} tokens streamed of {output_len}"
            record["e2e"] = time.perf_counter() - start
            return record

    start = time.perf_counter()
    records = await asyncio.gather(*(one(p, n) for p, n in requests))
    duration = time.perf_counter() - start
    done = [r for r in records if r["error"] is None]
    errors = [str(r["error"]) for r in records if r["error"] is not None]
    tokens = sum(r["output_tokens"] for r in done)
    return {"duration_s": duration, "output_tokens": tokens, "output_tok_per_s": tokens / duration,
            "failed": len(errors), "first_errors": errors[:3], "ttft_ms": percentiles([r["ttft"] for r in done])}


def _line(level: dict) -> str:
    itl, ttft = level["itl_ms"].get("p50", float("nan")), level["ttft_ms"].get("p50", float("nan"))
    return (f"c={level['concurrency']:<4} {level['tok_per_s']:8.0f} tok/s of {level['ideal_tok_per_s']:6.0f} ideal "
            f"({100 * level['fraction_of_ideal']:5.1f}%)  step every {level['step_interval_ms']:5.2f} ms "
            f"(fake {level['fake_step_ms']:.2f}), {level['tokens_per_step']:4.1f} tok/step  ITL p50 {itl:5.2f} ms  "
            f"TTFT p50 {ttft:6.1f} ms  CPU/s server {level['server_cpu_per_s']:.2f} client "
            f"{level['client_cpu_per_s']:.2f}  failed {level['failed']}")


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # no /proc (not Linux) or the process is gone: report no CPU time rather than fail
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", default="16,64", help="comma-separated streams in flight")
    p.add_argument("--device-ms", type=float, default=3.0, help="fake step time with the GIL released")
    p.add_argument("--host-ms", type=float, default=0.0, help="fake step time with the GIL held")
    p.add_argument("--input-len", type=int, default=256)
    p.add_argument("--output-len", type=int, default=256)
    p.add_argument("--num-prompts", type=int, default=None, help="requests per level (default 2 x concurrency)")
    p.add_argument("--stream-interval", type=float, default=0.0, help="the server's --stream-interval")
    p.add_argument("--switch-interval", type=float, default=None, help="the server's GIL switch interval (s)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--client", choices=["raw", "httpx"], default="raw",
                   help="raw: plain asyncio streams, events counted (cheap); httpx: serve_bench's client")
    p.add_argument("--out", default=None,
                   help="directory for serve_overhead.json and the server's log (default: the log in a temp dir)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="serve-overhead-"))
    out.mkdir(parents=True, exist_ok=True)
    proc, url = spawn_fake_server(args, out / "serve_overhead_server.log")
    levels = []
    try:
        wait_healthy(url, proc, out / "serve_overhead_server.log")
        run_level(url, make_requests(8, 16, 4, 32000, args.seed), 8, float("inf"), args.seed, 60)
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            level = measure_level(url, proc.pid, concurrency, args)
            levels.append(level)
            print(_line(level), flush=True)
    finally:
        stop_server(proc)
    report = {"device_ms": args.device_ms, "host_ms": args.host_ms, "switch_interval_s": args.switch_interval,
              "output_len": args.output_len, "stream_interval_s": args.stream_interval, "client": args.client,
              "levels": levels}
    if args.out:
        (out / "serve_overhead.json").write_text(json.dumps(report, indent=2))
    return 1 if any(level["failed"] for level in levels) else 0


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"serve_overhead: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    sys.exit(code)
