"""The sweep's arithmetic, files and refusals, fed made-up timings on a CPU through the GPU code path."""

from __future__ import annotations

import argparse
import csv

import pytest
import torch

from bench import report, sweep, timing
from bench.ceilings import Ceilings

CEIL = Ceilings(gpu="Fake GPU 80GB", copy_gbps=2000.0, matmul_tflops=800.0, l2_bytes=50 << 20)
REQUIRED = {"op", "impl", "shape", "dtype", "median_ms", "tflops", "gbps", "pct_of_ceiling", "baseline",
            "baseline_ms", "speedup", "gpu", "commit", "date"}


def _row(**kw):
    args = dict(op="x", impl="triton", case={"tokens": 4096, "hidden": 4096, "dtype": torch.bfloat16},
                flops=1e9, nbytes=2e9, median_ms=1.25, baseline="torch eager", baseline_ms=2.5, ceilings=CEIL,
                timing="events", commit="abc1234", date="2026-01-01T00:00:00Z")
    args.update(kw)
    return report.derive_row(**args)


def test_bytes_bound_row():
    # 2 GB at 2000 GB/s is a 1 ms floor; 1.25 ms measured is 80% of it, at 1600 GB/s.
    row = _row()
    assert row["bound"] == "bytes"
    assert row["gbps"] == pytest.approx(1600.0)
    assert row["pct_of_ceiling"] == pytest.approx(80.0)
    assert row["tflops"] == pytest.approx(1e9 / 1.25e-3 / 1e12)
    assert row["speedup"] == pytest.approx(2.0)
    assert row["baseline_pct_of_ceiling"] == pytest.approx(40.0)
    assert row["shape"] == "tokens=4096 hidden=4096" and row["dtype"] == "bf16"


def test_flops_bound_row_uses_the_matmul_rate():
    # 1.6e15 flops at 800 TFLOP/s is a 2 s floor, far above the bytes' 1 ms.
    row = _row(flops=1.6e15, median_ms=4000.0, baseline=None, baseline_ms=None)
    assert row["bound"] == "flops"
    assert row["pct_of_ceiling"] == pytest.approx(50.0)
    assert row["speedup"] == "" and row["baseline_ms"] == ""


def test_rejects_a_nonpositive_time():
    with pytest.raises(ValueError, match="positive and finite"):
        _row(median_ms=0.0)


def test_csv_table_and_plot(tmp_path):
    rows = [_row(), _row(case={"tokens": 1, "hidden": 896, "dtype": torch.float16, "residual": True},
                         nbytes=4e6, median_ms=0.004)]
    path = report.write_csv(rows, tmp_path / "x.csv")
    with path.open() as f:
        read = list(csv.DictReader(f))
    assert set(read[0]) >= REQUIRED and len(read) == 2
    assert read[1]["shape"] == "tokens=1 hidden=896 residual=True"
    assert float(read[0]["pct_of_ceiling"]) == pytest.approx(80.0)
    table = report.format_table(rows)
    assert "tokens=1 hidden=896 residual=True" in table and "2.00x" in table
    png = report.plot(rows, tmp_path / "x.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_sink_writes_each_row_as_it_comes(tmp_path):
    path = tmp_path / "rows.csv"
    with report.csv_sink(path, ["a", "b"]) as sink:
        sink({"a": 1, "b": 2.5})
        with path.open() as f:  # already on disk: a run cut short keeps what it measured
            assert list(csv.DictReader(f)) == [{"a": "1", "b": "2.5"}]
        sink({"a": 3, "b": "x"})
    with path.open() as f:
        assert [r["a"] for r in csv.DictReader(f)] == ["1", "3"]
    with report.csv_sink(None, ["a"]) as sink:
        sink({"a": 1})  # no path: the rows go nowhere


def test_safe_name():
    assert report.safe_name("NVIDIA H100 80GB HBM3") == "NVIDIA_H100_80GB_HBM3"
    assert report.safe_name("a/b:c") == "abc"


def test_select_cases_quick_and_dtypes():
    cases = [{"t": i, "dtype": dt} for dt in (torch.bfloat16, torch.float16) for i in range(20)]
    quick = sweep.select_cases(cases, None, quick=True)
    assert len(quick) == sweep.QUICK_CASES and {c["dtype"] for c in quick} == {torch.bfloat16}
    assert quick[0]["t"] == 0 and quick[-1]["t"] == 19
    only = sweep.select_cases(cases, sweep.parse_dtypes(["fp16"]), quick=False)
    assert len(only) == 20 and all(c["dtype"] == torch.float16 for c in only)
    with pytest.raises(ValueError, match="unknown dtype"):
        sweep.parse_dtypes(["int3"])


def test_input_sets_rotate_past_l2():
    assert timing.input_sets_for(1 << 20, 50 << 20) == 101  # 101 x 1 MiB > 100 MiB
    assert timing.input_sets_for(1 << 10, 50 << 20) == timing.MAX_SETS  # tiny sets: capped
    assert timing.input_sets_for(30 << 20, 50 << 20) == 4  # 4 x 30 MiB > 100 MiB
    assert timing.input_sets_for(1 << 30, 50 << 20) == 1


def test_time_each_runs_every_callable_on_every_set_before_timing(monkeypatch):
    # A lazily built per-input cache (the quantized ops' cuBLAS baselines dequantize their weight once) must
    # be built before the timed capture, or the capture records the build and every replay repeats it.
    sets = [{"i": i} for i in range(5)]
    seen, timed_after = [], []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(timing, "time_ms", lambda fn, graph=False: timed_after.append(sorted(seen)) or 1.0)
    fns = [lambda i, name=name: seen.append((name, i)) for name in ("impl", "baseline")]
    times, method = timing.time_each(fns, sets)
    assert times == [1.0, 1.0] and method == "graph"
    assert timed_after[0] == sorted((name, i) for name in ("impl", "baseline") for i in range(5))


def _args(tmp_path, **kw):
    ns = dict(ops=["rmsnorm", "silu_and_mul"], dtypes=None, quick=True, out=tmp_path, impl="triton",
              correctness=False, no_plot=False)
    ns.update(kw)
    return argparse.Namespace(**ns)


def _fake_gpu(monkeypatch, tuned_check: str = "ok") -> None:
    """The GPU branch of sweep.run with the device parts replaced: fixed timings, fixed ceilings, and the
    given verdict for the autotuned config."""
    from bench import ceilings, check

    monkeypatch.setattr(sweep, "use_interpreter_without_gpu", lambda: False)
    monkeypatch.setattr(sweep, "check_op", lambda op, device, impl: check.OpResult(op.name, 1, 1, "", 0.0))
    monkeypatch.setattr(ceilings, "measure", lambda: CEIL)
    monkeypatch.setattr(sweep, "time_case", lambda op, case, impl, c: (0.5, 1.0, "events"))
    monkeypatch.setattr(sweep, "check_tuned_case", lambda op, case, impl: tuned_check)


def test_sweep_writes_csvs_from_fake_timings(tmp_path, monkeypatch, capsys):
    _fake_gpu(monkeypatch)
    assert sweep.run(_args(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "Fake GPU 80GB" in out and "2.00x" in out
    for name in ("rmsnorm", "silu_and_mul"):
        rows = report.read_csv(tmp_path / f"{name}.csv")
        assert len(rows) == sweep.QUICK_CASES and set(rows[0]) >= REQUIRED
        assert all(float(r["speedup"]) == pytest.approx(2.0) for r in rows)
        assert (tmp_path / f"{name}.png").exists()


def test_sweep_fails_when_the_autotuned_config_is_wrong(tmp_path, monkeypatch, capsys):
    _fake_gpu(monkeypatch, tuned_check="FAIL AssertionError: off by 3")
    assert sweep.run(_args(tmp_path, ops=["rmsnorm"])) == 1
    assert "FAIL AssertionError: off by 3" in capsys.readouterr().out
    assert report.read_csv(tmp_path / "rmsnorm.csv")[0]["tuned_check"] == "FAIL AssertionError: off by 3"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_sweep_refuses_to_time_on_cpu(tmp_path, capsys):
    assert sweep.run(_args(tmp_path)) == 2
    assert "no GPU is visible" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_sweep_correctness_only(tmp_path, capsys):
    assert sweep.run(_args(tmp_path, ops=["silu_and_mul"], correctness=True)) == 0
    assert "silu_and_mul" in capsys.readouterr().out


@pytest.mark.parametrize("gpu", [False, True], ids=["interpreter", "gpu-path"])
def test_sweep_refuses_an_impl_that_no_chosen_op_has(tmp_path, monkeypatch, capsys, gpu):
    if gpu:
        _fake_gpu(monkeypatch)
    assert sweep.run(_args(tmp_path, ops=["rmsnorm"], impl="nonexistent", correctness=not gpu)) == 2
    err = capsys.readouterr().err
    assert "no chosen op has an implementation 'nonexistent'" in err and "rmsnorm: torch, triton" in err
    assert not list(tmp_path.iterdir())


def test_sweep_correctness_names_the_ops_without_the_impl(tmp_path, monkeypatch, capsys):
    from kernels import registry

    op = registry.get("silu_and_mul")
    monkeypatch.setitem(op.impls, "my_silu_and_mul", op.triton)
    assert sweep.run(_args(tmp_path, ops=["rmsnorm", "silu_and_mul"], impl="my_silu_and_mul",
                           correctness=True)) == 0
    assert "not checked: rmsnorm (no implementation 'my_silu_and_mul')" in capsys.readouterr().out


@pytest.mark.gpu
def test_real_sweep_on_gpu(tmp_path):
    assert sweep.run(_args(tmp_path, ops=["silu_and_mul"], dtypes=["bf16"], quick=True)) == 0
    rows = report.read_csv(tmp_path / "silu_and_mul.csv")
    assert rows and all(float(r["median_ms"]) > 0 and 0 < float(r["pct_of_ceiling"]) < 200 for r in rows)
    assert rows[0]["tuned_check"] == "ok"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_gpu_suite_refuses_without_a_gpu(tmp_path):
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_suite.sh"
    out = subprocess.run(["bash", str(script), str(tmp_path / "suite")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no GPU visible" in out.stderr


def test_summary_of_targets(tmp_path, capsys):
    from bench import summarize

    small = _row(case={"tokens": 1, "hidden": 8, "dtype": torch.bfloat16}, nbytes=1e3, median_ms=0.002,
                 baseline_ms=0.001)  # 0.5x, latency-bound
    big = _row()  # 2 GB: beyond 2x L2, 80%, 2x
    report.write_csv([small, big], tmp_path / "x.csv")
    assert summarize.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "beyond 2xL2 (1): min  80.0%" in out and "slowest speedup 0.50x at tokens=1 hidden=8" in out


def test_results_dir(tmp_path, monkeypatch):
    assert report.results_dir("NVIDIA H200", tmp_path / "x") == tmp_path / "x" and (tmp_path / "x").is_dir()
    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    made = report.results_dir("NVIDIA H100 80GB HBM3", None)
    assert made == tmp_path / "results" / "NVIDIA_H100_80GB_HBM3" and made.is_dir()


def test_tune_quant_split_aim_is_set_for_the_block_and_restored():
    from bench.tune_quant import programs_per_sm
    from kernels import _split_k
    from kernels import quant_linear as ql

    before = (_split_k.PROGRAMS_PER_SM, ql.W4_GEMV_PROGRAMS_PER_SM)
    with programs_per_sm(7):
        assert (_split_k.PROGRAMS_PER_SM, ql.W4_GEMV_PROGRAMS_PER_SM) == (7, 7)
        with programs_per_sm(None):  # None: the values in force stay
            assert _split_k.PROGRAMS_PER_SM == 7
    assert before == (_split_k.PROGRAMS_PER_SM, ql.W4_GEMV_PROGRAMS_PER_SM)
    with pytest.raises(RuntimeError), programs_per_sm(3):
        raise RuntimeError("a failing exploration")
    assert before == (_split_k.PROGRAMS_PER_SM, ql.W4_GEMV_PROGRAMS_PER_SM)
