"""``tritonforge serve``: an OpenAI-compatible HTTP API over one engine (uvicorn, one process).

    tritonforge serve --model ./my-model --host 127.0.0.1 --port 8000
    tritonforge serve --model ./my-model --api-key secret --max-queue 256 --request-timeout 120

Then any OpenAI client works against ``http://127.0.0.1:8000/v1``; ``tritonforge generate --url``,
``tritonforge status ID`` and ``tritonforge cancel ID`` talk to the same server. SIGTERM or Ctrl-C shuts
down gracefully: no new connections, in-flight responses get ``--shutdown-timeout`` seconds to finish,
then what is left is aborted and the engine loop stops.
"""

from __future__ import annotations

import argparse
import logging
import sys

SWITCH_INTERVAL_S = 0.0005  # see serve_app


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", required=True, help="model directory, .gguf file or hub id")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: no key)")
    parser.add_argument("--served-model-name", help="the model name clients use (default: the model's folder name)")
    parser.add_argument("--max-queue", type=int, default=1024,
                        help="requests allowed to wait for a slot; beyond it: 429 with Retry-After")
    parser.add_argument("--request-timeout", type=float, default=600.0,
                        help="default per-request timeout in seconds (a request's 'timeout' field overrides it)")
    parser.add_argument("--shutdown-timeout", type=float, default=30.0,
                        help="seconds in-flight requests get to finish on SIGTERM")
    parser.add_argument("--stream-interval", type=float, default=0.0,
                        help="least seconds between two writes of one stream (0: send tokens as they come); "
                             "larger values cost the server fewer writes per token under many streams")
    parser.add_argument("--switch-interval", type=float, default=SWITCH_INTERVAL_S,
                        help="seconds a thread may hold the GIL while another waits (sys.setswitchinterval): "
                             f"how soon the engine loop gets it back from the HTTP side (default {SWITCH_INTERVAL_S})")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    engine = parser.add_argument_group("engine")
    engine.add_argument("--backend", choices=["triton", "torch"], help="default: triton on a GPU, torch on a CPU")
    engine.add_argument("--op", action="append", default=[], metavar="NAME=IMPL",
                        help="use a registered implementation for one op (repeatable)")
    engine.add_argument("--device", help="e.g. cuda, cuda:1, cpu")
    engine.add_argument("--dtype", help="float32, float16 or bfloat16 (default: the model's; float32 on a CPU)")
    engine.add_argument("--max-model-len", type=int, help="cap on prompt + output tokens per sequence")
    engine.add_argument("--max-num-seqs", type=int, default=256, help="sequences batched per step")
    engine.add_argument("--max-num-batched-tokens", type=int, default=8192, help="tokens per step")
    engine.add_argument("--num-kv-blocks", type=int, help="KV cache size in blocks (default: from free memory)")
    engine.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    engine.add_argument("--no-prefix-cache", action="store_true", help="disable prefix reuse")
    engine.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    engine.add_argument("--revision", help="hub revision (branch, tag or commit)")
    engine.add_argument("--engine-in-process", action="store_true",
                        help="run the engine in the server's process (default: a child process, so that HTTP "
                             "work and the engine's host work do not share one GIL)")


def build_engine(args):
    from engine.commands.generate import parse_op_overrides
    from engine.config import EngineConfig
    from engine.llm_engine import LLMEngine

    config = EngineConfig(model=args.model, backend=args.backend, device=args.device, dtype=args.dtype,
                          op_overrides=parse_op_overrides(args.op), max_model_len=args.max_model_len,
                          max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                          num_kv_blocks=args.num_kv_blocks, gpu_memory_utilization=args.gpu_memory_utilization,
                          enable_prefix_cache=not args.no_prefix_cache, enforce_eager=args.enforce_eager,
                          revision=args.revision)
    if args.engine_in_process:
        return LLMEngine(config)
    from engine.engine_process import EngineProcess

    return EngineProcess(config, log_level=args.log_level)


def run(args) -> int:
    from engine.engine_process import EngineProcessError
    from engine.loader.errors import ModelLoadError
    from engine.server.app import create_app

    configure_logging(args.log_level)
    if not 0 < args.port < 65536:
        print(f"tritonforge serve: --port must be in 1..65535, got {args.port}", file=sys.stderr)
        return 2
    if not args.switch_interval > 0:
        print(f"tritonforge serve: --switch-interval must be > 0 seconds, got {args.switch_interval}", file=sys.stderr)
        return 2
    try:
        engine = build_engine(args)
        app = create_app(engine, model_name=args.served_model_name, api_key=args.api_key, max_queue=args.max_queue,
                         request_timeout_s=args.request_timeout, shutdown_timeout_s=args.shutdown_timeout,
                         stream_interval_s=args.stream_interval)
    except (ModelLoadError, EngineProcessError, ValueError, TypeError, OSError, MemoryError) as err:
        print(f"tritonforge serve: {err}", file=sys.stderr)
        return 1
    try:
        serve_app(app, args.host, args.port, args.log_level, args.shutdown_timeout, args.switch_interval)
    finally:
        engine.close()
    return 0


def configure_logging(level: str) -> None:
    """Timestamped lines on stderr from every logger (the engine's start-up phases, slow steps, requests)."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve_app(app, host: str, port: int, log_level: str, shutdown_timeout_s: float,
              switch_interval_s: float = SWITCH_INTERVAL_S) -> None:
    """Run ``app`` under uvicorn until SIGTERM/SIGINT (stop accepting, drain, then the app's shutdown)."""
    import uvicorn

    # The engine loop thread and the HTTP event loop share the GIL; Python's default 5 ms switch interval
    # can hold the engine back that long after each GPU wait, so hand the GIL over sooner. Measured with
    # bench/serve_overhead.py (64 streams, a fake step of 0.5 ms GIL released + 2.4 ms held): 5 ms -> 50-58%
    # of the ideal tokens/s, 1 ms -> 59-65%, 0.5 ms -> 64-67%, 0.2 ms -> 67% (more forced switches).
    sys.setswitchinterval(switch_interval_s)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=shutdown_timeout_s)
