"""The scripts a lent-GPU session runs, checked on the CPU so that they work the first time there.

- ``bench/gpu_engine.sh`` runs for real with both benchmarks in ``--smoke`` mode (toy-width models of the
  same architectures, the torch backend, a spawned server on 127.0.0.1): the JSON and CSV files must
  carry every key and column, and what lands in the output folder must fit the device tool's return limits
  (at most 8 files, no more than 2 folders down, plain names).
- ``run_engine`` prints and raises the finish reasons and the engine's error text when a step fails, and
  counts CUDA-graph replays; a failing phase keeps the phases before it in both files.
- The shell scripts' own logic and the tune scripts: tests/test_gpu_shell_scripts.py; the kernel A/B
  scripts: tests/test_kernel_ab_scripts.py.
- On a GPU (marked ``gpu``): the engine benchmark's toy-size run through the triton backend and CUDA graphs.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.engine_helpers import use_cpu_decode_graphs

ROOT = Path(__file__).resolve().parents[1]
GPU_SUITE, GPU_ENGINE = ROOT / "bench" / "gpu_suite.sh", ROOT / "bench" / "gpu_engine.sh"
MODELS = ("qwen2.5-0.5b", "llama-3.2-1b")
SMOKE_CONCURRENCY, SMOKE_RATES = (1, 3), ("inf", "50.0")
ENGINE_METRICS = {"single_decode_tok_per_s", "bandwidth_limit_tok_per_s", "fraction_of_bandwidth_limit",
                  "single_ttft_ms", "single_step_ms_p50", "offline_output_tok_per_s", "offline_ttft_ms_p50",
                  "offline_ttft_ms_p99", "offline_decode_step_ms_p50", "offline_decode_step_ms_p99",
                  "hf_single_tok_per_s", "hf_offline_tok_per_s_extrapolated", "speedup_single_stream",
                  "speedup_offline"}
SERVE_COLUMNS = ["gpu", "model", "concurrency", "request_rate", "num_prompts", "completed", "failed",
                 "request_per_s", "output_tok_per_s", "offline_output_tok_per_s", "server_vs_offline",
                 "ttft_ms_p50", "ttft_ms_p99", "itl_ms_p50", "itl_ms_p99", "tpot_ms_mean", "e2e_ms_p50"]


def quiet_env(**extra) -> dict:
    """The environment for a script under test: one torch thread (the CPU is shared; smoke numbers mean
    nothing), no interpreter switch (the scripts must decide for themselves, as on a GPU machine)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "OUT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    return env


def assert_fits_device_return(folder: Path) -> None:
    """The device tool returns at most 8 files, no more than 2 folders down, named in [A-Za-z0-9._-]."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert 0 < len(files) <= 8, sorted(str(p.relative_to(folder)) for p in files)
    for p in files:
        rel = p.relative_to(folder)
        assert len(rel.parts) <= 3, f"{rel} is more than 2 folders down"
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts), rel


def finite_number(text: str) -> float:
    value = float(text)
    assert math.isfinite(value), text
    return value


# --- gpu_engine.sh end to end, both benchmarks in smoke mode ------------------------------------------

@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    """One real run of gpu_engine.sh on the CPU: its output folder and its combined output."""
    for name in ("fastapi", "uvicorn"):  # dependencies of the project, but absent from a bare GPU machine
        pytest.importorskip(name, reason="the serving benchmark's server needs it")
    tmp = tmp_path_factory.mktemp("gpu_engine")
    (tmp / "no_wheels").mkdir()
    env = quiet_env(PYTHON=sys.executable, WHEEL_DIR=str(tmp / "no_wheels"), ENGINE_ARGS="--smoke",
                    SERVE_ARGS="--smoke --client-procs 2 --op rmsnorm=torch --concurrency "
                    + ",".join(map(str, SMOKE_CONCURRENCY)) + " --request-rate " + ",".join(SMOKE_RATES))
    out = subprocess.run(["bash", str(GPU_ENGINE), str(tmp / "out")], capture_output=True, text=True, env=env,
                         timeout=360)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return tmp / "out", out.stdout + out.stderr


def test_gpu_engine_writes_what_the_device_tool_returns(engine_run):
    out, _ = engine_run
    names = {p.name for p in out.iterdir()}
    assert names == {"engine_bench.json", "engine_bench.csv", "engine_bench.log", "serve_bench.json",
                     "serve_bench.csv", "serve_bench.log", "serve_bench_server.log"}
    assert_fits_device_return(out)


def test_engine_bench_json(engine_run):
    out, _ = engine_run
    report = json.loads((out / "engine_bench.json").read_text())
    assert report["smoke"] is True and report["torch"] == torch.__version__
    work = report["workload"]
    assert [r["model"] for r in report["results"]] == list(MODELS)
    for r in report["results"]:
        assert r["engine"] == {"backend": "torch", "device": "cpu", "dtype": "bfloat16", "enforce_eager": False,
                               "cuda_graphs": False, "graph_batch_sizes": []}
        single, offline = r["single_stream"], r["offline"]
        # greedy, ignore_eos: every request runs to its own max_tokens, and nothing else ends it
        assert single["output_tokens"] == work["single_new_tokens"] and single["finish_reasons"] == {"length": 1}
        assert single["decode_steps"] == work["single_new_tokens"] - 1
        assert offline["finish_reasons"] == {"length": 4}
        lo, hi = work["offline_min_len"], work["offline_max_len"]
        assert 4 * lo <= offline["output_tokens"] <= 4 * hi
        for part in (single, offline):
            assert set(part["ttft_ms"]) == set(part["decode_step_ms"]) == {"p50", "p90", "p99", "mean"}
        assert single["fraction_of_limit"] > 0 and single["copy_bandwidth_GBps"] > 0
        assert r["hf"]["offline"]["requests_run"] == 2 and r["hf"]["single_stream_tok_per_s"] > 0
        assert r["speedup_single_stream"] > 0 and r["speedup_offline"] > 0


def test_engine_bench_csv(engine_run):
    out, _ = engine_run
    with open(out / "engine_bench.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["gpu", "model", "backend", "cuda_graphs", "metric", "value"]
    for model in MODELS:
        mine = [r for r in rows if r["model"] == model]
        assert {r["metric"] for r in mine} == ENGINE_METRICS and len(mine) == len(ENGINE_METRICS)
        assert all(r["backend"] == "torch" and r["cuda_graphs"] == "False" and r["gpu"] == "cpu (smoke)"
                   for r in mine)
        assert all(finite_number(r["value"]) > 0 for r in mine)


def test_serve_bench_json(engine_run):
    out, log = engine_run
    report = json.loads((out / "serve_bench.json").read_text())
    assert report["smoke"] is True and report["model"] == "qwen2.5-0.5b"
    assert report["engine_settings"]["backend"] == "torch" and report["engine_settings"]["device"] == "cpu"
    assert report["offline_engine"] == {"backend": "torch", "device": "cpu", "cuda_graphs": False}
    assert report["op_overrides"] == {"rmsnorm": "torch"}  # passed to the server (--op) and the offline engine
    assert re.search(r"server starting at http://127\.0\.0\.1:\d+ ", log), "the server must listen on loopback"
    levels = [(lv["concurrency"], lv["request_rate"]) for lv in report["levels"]]
    assert levels == [(c, r) for c in SMOKE_CONCURRENCY for r in SMOKE_RATES]
    for lv in report["levels"]:
        server = lv["server"]
        assert server["failed"] == 0 and server["first_errors"] == []
        assert server["completed"] == lv["num_prompts"] == lv["concurrency"]
        assert lv["client_procs"] == min(2, lv["concurrency"])  # every request counted once, across processes
        assert server["output_tokens"] == lv["num_prompts"] * report["output_len"]
        assert lv["offline"]["output_tokens"] == server["output_tokens"]
        assert lv["server_vs_offline"] > 0
        for key in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"):
            assert set(server[key]) == {"p50", "p90", "p99", "mean"}, key
    # the server's own count: warm-up, then each level's requests once per rate
    expected = max(SMOKE_CONCURRENCY) + sum(SMOKE_CONCURRENCY) * len(SMOKE_RATES)
    assert report["server_stats"]["num_finished"] == expected


def test_serve_bench_csv(engine_run):
    out, _ = engine_run
    with open(out / "serve_bench.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == SERVE_COLUMNS
    assert len(rows) == len(SMOKE_CONCURRENCY) * len(SMOKE_RATES)
    for row in rows:
        assert row["failed"] == "0" and row["completed"] == row["num_prompts"]
        for column in SERVE_COLUMNS[7:]:
            assert finite_number(row[column]) > 0, column


# --- run_engine's failure report --------------------------------------------------------------------

def test_run_engine_reports_finish_reasons_and_errors(tmp_path, capsys):
    from bench.engine_bench import run_engine
    from bench.model_shapes import MODELS as SHAPES
    from bench.model_shapes import SMOKE_SHAPE, write_model
    from engine.config import EngineConfig
    from engine.llm_engine import LLMEngine

    model = write_model(tmp_path / "m", dict(SHAPES["llama-3.2-1b"], **SMOKE_SHAPE), torch.device("cpu"))
    engine = LLMEngine(EngineConfig(model=str(model), backend="torch", device="cpu", max_model_len=64))

    def broken_forward(*args, **kwargs):
        raise RuntimeError("injected: out of resources")

    engine.runner.execute = broken_forward
    with pytest.raises(RuntimeError, match="error=2") as err:
        run_engine(engine, [([11, 12, 13], 4), ([14, 15], 4)])
    assert "2 request(s) failed with: RuntimeError: injected: out of resources" in str(err.value)
    assert "finish reasons: error=2" in capsys.readouterr().err


# --- engine_bench's phases and graph replays -----------------------------------------------------

def test_engine_bench_keeps_earlier_phases_when_one_fails(tmp_path, monkeypatch, capsys):
    """A failure in the offline phase of the first model: its single-stream numbers are kept in both files,
    the failure is recorded, the second model still runs, and the exit code says it failed."""
    from bench import engine_bench

    real_run_engine = engine_bench.run_engine
    calls = []

    def run_engine(engine, requests, *rest):
        calls.append(len(requests))
        if len(calls) == 4:  # warm-up, short single, single stream, then the offline run
            raise RuntimeError("injected: offline run broke")
        return real_run_engine(engine, requests, *rest)

    monkeypatch.setattr(engine_bench, "run_engine", run_engine)
    assert engine_bench.main(["--smoke", "--skip-hf", "--out", str(tmp_path)]) == 1
    first, second = json.loads((tmp_path / "engine_bench.json").read_text())["results"]
    assert first["error"] == "RuntimeError: injected: offline run broke" and "offline" not in first
    assert first["single_stream"]["output_tokens"] > 0
    assert "error" not in second and second["offline"]["finish_reasons"] == {"length": 4}
    with open(tmp_path / "engine_bench.csv", newline="") as f:
        metrics = {(r["model"], r["metric"]) for r in csv.DictReader(f)}
    assert (MODELS[0], "single_decode_tok_per_s") in metrics and (MODELS[0], "offline_output_tok_per_s") not in metrics
    assert (MODELS[1], "offline_output_tok_per_s") in metrics
    assert f"failed for {MODELS[0]}" in capsys.readouterr().err


def test_run_engine_counts_graph_replays(tmp_path):
    from bench.engine_bench import count_graph_replays, run_engine
    from bench.model_shapes import MODELS as SHAPES
    from bench.model_shapes import SMOKE_SHAPE, write_model
    from engine.config import EngineConfig
    from engine.llm_engine import LLMEngine

    model = write_model(tmp_path / "m", dict(SHAPES["qwen2.5-0.5b"], **SMOKE_SHAPE), torch.device("cpu"))
    engine = LLMEngine(EngineConfig(model=str(model), backend="torch", device="cpu", max_model_len=64))
    assert run_engine(engine, [([3, 4, 5], 3)], count_graph_replays(engine))["graph_replays"] == 0
    graphs = use_cpu_decode_graphs(engine, max_batch=4)
    replays = count_graph_replays(engine)
    run = run_engine(engine, [([11, 12, 13, 14], 5)], replays)
    # one prefill step samples the first token, then 4 decode steps, each through the graph path
    assert run["decode_steps"] == run["graph_replays"] == graphs.steps_served == 4


@pytest.mark.gpu
def test_engine_bench_smoke_on_the_gpu(tmp_path):
    """The benchmark's GPU path at toy size: triton backend, captured graphs that every single-stream decode
    step replays, CUDA synchronisation, the copy bandwidth, HF on the GPU."""
    out = subprocess.run([sys.executable, "bench/engine_bench.py", "--smoke", "--device", "cuda", "--models",
                          "qwen2.5-0.5b", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         env=quiet_env(), timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads((tmp_path / "engine_bench.json").read_text())
    (result,) = report["results"]
    assert result["engine"]["backend"] == "triton" and result["engine"]["cuda_graphs"] is True
    single = result["single_stream"]
    assert single["graph_replays"] == single["decode_steps"] == report["workload"]["single_new_tokens"] - 1
    assert result["offline"]["finish_reasons"] == {"length": 4}
    assert result["hf"]["single_stream_tok_per_s"] > 0 and single["copy_bandwidth_GBps"] > 10


def test_a_failure_with_cuda_graphs_is_rerun_eagerly(monkeypatch, tmp_path):
    """engine_bench reruns a model that failed with CUDA graphs with enforce_eager, as its own result."""
    from bench import engine_bench

    seen = []

    def fake_bench_model(name, config, workdir, args, work, result, save):
        seen.append(args.enforce_eager)
        if not args.enforce_eager:
            raise RuntimeError("engine run failed: 1 requests, 1 produced a token; finish reasons: error=1")
        result["engine_load_s"] = 1.5

    monkeypatch.setattr(engine_bench, "bench_model", fake_bench_model)
    monkeypatch.setattr(engine_bench, "empty_cache", lambda device: None)
    monkeypatch.setattr(engine_bench.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(engine_bench.torch.cuda, "get_device_name", lambda index=0: "Fake GPU")
    assert engine_bench.main(["--out", str(tmp_path), "--models", "qwen2.5-0.5b", "--skip-hf"]) == 1
    report = json.loads((tmp_path / "engine_bench.json").read_text())
    assert seen == [False, True]
    first, rerun = report["results"]
    assert "error=1" in first["error"] and "rerun" not in first
    assert "enforce_eager" in rerun["rerun"] and rerun["engine_load_s"] == 1.5 and "error" not in rerun


def test_decode_profile_variants_parse_and_refuse_a_cpu():
    import argparse

    from bench.decode_profile import main, parse_variant

    assert parse_variant("engine=") == ("engine", {}, {})
    assert parse_variant("unfused=rope=triton,silu_and_mul=triton") == (
        "unfused", {"rope": "triton", "silu_and_mul": "triton"}, {})
    assert parse_variant("fixed=kernels.paged_decode.FIT_SPLITS_TO_CONTEXT=False,linear=linear_decode") == (
        "fixed", {"linear": "linear_decode"}, {"kernels.paged_decode.FIT_SPLITS_TO_CONTEXT": False})
    assert parse_variant("short=engine.decode_graphs.GRAPH_MAX_CONTEXT=512") == (
        "short", {}, {"engine.decode_graphs.GRAPH_MAX_CONTEXT": 512})
    for bad, says in [("=rope=triton", "name"), ("x=rope", "OP=IMPL"), ("x=rope=triton,=torch", "OP=IMPL"),
                      ("x=kernels.nowhere.FLAG=1", "no module"), ("x=kernels.paged_decode.NOPE=1", "no setting"),
                      ("x=kernels.paged_decode.FIT_SPLITS_TO_CONTEXT=0", "is a bool"),
                      ("x=kernels._decode_splits.MAX_SPLITS=lots", "literal")]:
        with pytest.raises(argparse.ArgumentTypeError, match=says):
            parse_variant(bad)
    if not torch.cuda.is_available():
        assert main(["--out", "unused"]) == 2  # says it needs a GPU, writes nothing


def test_decode_profile_sequence_is_the_last_replay_in_start_order():
    from types import SimpleNamespace

    from bench.decode_profile import kernel_sequence

    def event(name, start, end, device=torch.autograd.DeviceType.CUDA):
        return SimpleNamespace(name=name, device_type=device,
                               time_range=SimpleNamespace(start=start, elapsed_us=lambda: end - start))

    # Two replays of three kernels, listed out of order, with a host event mixed in.
    events = [event("b", 12, 15), event("a", 0, 2), event("c", 15, 16), event("a", 10, 12), event("b", 2, 5),
              event("c", 5, 6), event("host", 1, 30, torch.autograd.DeviceType.CPU)]
    rows = kernel_sequence(SimpleNamespace(events=lambda: events), replays=2)
    assert [(r["position"], r["kernel"], r["us"]) for r in rows] == [(0, "a", 2), (1, "b", 3), (2, "c", 1)]
    assert [(r["start_us"], r["end_us"], r["adds_us"]) for r in rows] == [(0, 2, 2), (2, 5, 3), (5, 6, 1)]


def test_decode_profile_critical_path_shares_add_up_to_the_span():
    """Under PDL kernels overlap: a kernel that starts early and ends after its predecessor adds only the
    difference of the ends; one that ends inside its predecessor gets a negative share, which the next one
    makes up; the shares sum to the replay's span."""
    from types import SimpleNamespace

    from bench.decode_profile import critical_path, kernel_sequence

    def event(name, start, end):
        return SimpleNamespace(name=name, device_type=torch.autograd.DeviceType.CUDA,
                               time_range=SimpleNamespace(start=start, elapsed_us=lambda: end - start))

    # Two replays: a [0, 4], b starts at 1 (early, waits) and ends at 6, c [5, 5.5] ends inside b, d ends at 8.
    replay = [("a", 0, 4), ("b", 1, 6), ("c", 5, 5.5), ("d", 5.8, 8)]
    events = [event(n, s + t0, e + t0) for t0 in (0, 100) for n, s, e in replay]
    prof = SimpleNamespace(events=lambda: events)
    assert critical_path(prof, replays=2) == {"a": 4, "b": 2, "c": -0.5, "d": 2.5}
    assert sum(critical_path(prof, replays=2).values()) == 8  # the span of one replay
    assert [r["adds_us"] for r in kernel_sequence(prof, replays=2)] == [4, 2, -0.5, 2.5]


def test_decode_profile_folds_the_replay_into_one_layer():
    """Two launches before, three layers of (x, y, x), one after: each slot's share averaged over the layers.
    The layer's length comes from y (the kernel that runs once a layer); the layers start at the first x, as
    early as three identical runs allow. A replay whose layers differ gives no table."""
    from bench.decode_profile import layer_table

    names = ["embed", "norm"] + ["x", "y", "x"] * 3 + ["head"]
    sequence = [{"kernel": n, "adds_us": float(a)} for a, n in enumerate(names, start=1)]
    rows = layer_table(sequence, num_layers=3)
    assert [(r["slot"], r["kernel"]) for r in rows] == [
        ("before", "2 launches"), (0, "x"), (1, "y"), (2, "x"), ("after", "1 launches")]
    assert [r["mean_adds_us"] for r in rows] == [1 + 2, (3 + 6 + 9) / 3, (4 + 7 + 10) / 3, (5 + 8 + 11) / 3, 12]
    assert (rows[1]["min_adds_us"], rows[1]["max_adds_us"]) == (3, 9)
    sequence[7]["kernel"] = "z"  # the third layer's y is another kernel
    assert layer_table(sequence, num_layers=3) == []
    assert layer_table(sequence, num_layers=5) == []  # nothing runs five times


def test_decode_profile_module_settings_come_back_after_an_error():
    from bench.decode_profile import module_settings
    from kernels import _decode_splits, paged_decode

    def current():
        return paged_decode.FIT_SPLITS_TO_CONTEXT, _decode_splits.MAX_SPLITS

    before = current()
    changed = {"kernels.paged_decode.FIT_SPLITS_TO_CONTEXT": not before[0], "kernels._decode_splits.MAX_SPLITS": 7}
    with pytest.raises(RuntimeError, match="inside"), module_settings(changed):
        seen = current()
        raise RuntimeError("inside")
    assert seen == (not before[0], 7)
    assert current() == before


def test_engine_host_overhead_runs_every_phase_on_a_cpu(tmp_path):
    """The host-overhead bench on toy sizes: its stand-in forward must keep the runner's (logits, argmax)
    contract, and every host phase must be timed."""
    import json

    from bench.engine_host_overhead import main

    assert main(["--out", str(tmp_path), "--label", "smoke", "--batches", "1", "2", "--repeats", "1",
                 "--steps", "2", "--workloads", "greedy", "sampled", "--device", "cpu"]) == 0
    results = json.loads((tmp_path / "engine_host_overhead_smoke.json").read_text())["results"]
    assert set(results) == {"greedy/b1", "greedy/b2", "sampled/b1", "sampled/b2"}
    for phases in results.values():
        assert phases["step"] > 0 and phases["schedule"] > 0 and phases["metadata"] > 0
    assert results["sampled/b2"]["sampling_tensors"] > 0 and results["sampled/b2"]["sample_op"] > 0
