"""The lent-GPU shell scripts' own logic, and the tune scripts, checked on the CPU.

- ``bench/gpu_suite.sh`` and ``bench/gpu_engine.sh`` (wheel install, arguments, step limits, exit codes,
  packing, what a call cut short leaves) run against a stand-in ``python`` (``PYTHON=...``) that records
  each call instead of running tests or benchmarks, and passes ``-m pip`` on to the real interpreter, so
  the wheel install is real. Their real end-to-end run is in tests/test_gpu_scripts.py.
- The bench modules import on a CPU host without touching a GPU; every ``bench/tune_*.py`` answers
  ``--help`` and refuses, with a clear message and nothing written, to run without a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from tests.test_gpu_scripts import GPU_ENGINE, GPU_SUITE, ROOT, assert_fits_device_return, quiet_env

# --- the shell scripts' logic, against a stand-in python ------------------------------------------------

FAKE_PYTHON = '''#!{python}
"""Stand-in for python3 in the GPU scripts: records each call, plays the GPU-name query, pytest, the sweep
and the benchmarks, and hands `-m pip` to the real interpreter."""
import json, os, subprocess, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({{"args": args, "pythonpath": os.environ.get("PYTHONPATH", "")}}) + "\\n")
if args[:2] == ["-m", "pip"]:
    sys.exit(subprocess.call([sys.executable, *args]))
if args[0] == "-c":
    print(os.environ.get("FAKE_GPU", "Fake GPU 80GB"))
    sys.exit(0)
rule = json.loads(os.environ.get("FAKE_RULES", "{{}}"))  # substring of the call -> [exit code, seconds]
code, seconds = next((v for k, v in rule.items() if k in " ".join(args)), (0, 0))
if args[:2] == ["-m", "bench.sweep"]:
    out = args[args.index("--out") + 1]
    with open(os.path.join(out, "fake_op.csv"), "w") as f:
        f.write("op,median_ms\\nfake_op,1.0\\n")
print("stand-in ran:", " ".join(args), flush=True)
time.sleep(seconds)
sys.exit(code)
'''


@pytest.fixture
def fake_python(tmp_path):
    path = tmp_path / "fake_python"
    path.write_text(FAKE_PYTHON.format(python=sys.executable))
    path.chmod(0o755)
    log = tmp_path / "calls.jsonl"

    def run(script: Path, *args: str, rules: dict | None = None, kill_after: int | None = None,
            **env) -> tuple[subprocess.CompletedProcess, list]:
        full_env = quiet_env(PYTHON=str(path), FAKE_LOG=str(log), FAKE_RULES=json.dumps(rules or {}), **env)
        for key in ("OPS", "QUICK", "DTYPES", "SWEEP", "SWEEP_TIMEOUT", "TEST_TIMEOUT", "PACK", "ENGINE_ARGS",
                    "SERVE_ARGS"):
            full_env.setdefault(key, "")
        # Wheels carried in the checkout's .whl/ are the GPU machine's (Python 3.12), not this one's.
        full_env.setdefault("WHEEL_DIR", str(tmp_path / "no-wheels"))
        log.unlink(missing_ok=True)
        # kill_after: as the device tool ends a call at its limit, the whole process group at once
        limit = ["timeout", "-s", "KILL", str(kill_after)] if kill_after else []
        out = subprocess.run([*limit, "bash", str(script), *args], capture_output=True, text=True, env=full_env,
                             timeout=120)
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return out, calls

    return run


@pytest.mark.parametrize("script", [GPU_SUITE, GPU_ENGINE], ids=lambda p: p.name)
def test_shell_syntax(script):
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_gpu_suite_all_ops_packed(fake_python, tmp_path):
    out, calls = fake_python(GPU_SUITE, str(tmp_path / "res"), PACK="1", QUICK="1", DTYPES="bf16 fp16",
                             TEST_TIMEOUT="60", rules={"-m gpu": [5, 0]})  # none collected: pytest's 5 is fine
    assert out.returncode == 0, out.stdout + out.stderr
    steps = [c["args"] for c in calls if c["args"][0] == "-m"]
    work = steps[1][steps[1].index("--out") + 1]
    pytest = ["-m", "pytest", "-v", "--durations=30"]
    assert steps == [[*pytest, "-m", "gpu", "tests"],
                     ["-m", "bench.sweep", "--quick", "--dtypes", "bf16", "fp16", "--out", work],
                     ["-m", "bench.summarize", work], [*pytest, "tests/test_ops.py"]]
    assert all(c["pythonpath"].split(":")[0] == str(ROOT) for c in calls)
    res = tmp_path / "res"
    assert {p.name for p in res.iterdir()} == {"suite.tar.gz", "gpu_tests.log", "op_tests.log", "sweep.log",
                                               "summary.log"}
    assert_fits_device_return(res)
    with tarfile.open(res / "suite.tar.gz") as tar:
        assert "suite/fake_op.csv" in tar.getnames()
    assert "stand-in ran: -m bench.sweep" in (res / "sweep.log").read_text()


def test_gpu_suite_cut_short_still_leaves_what_ran(fake_python, tmp_path):
    """The device tool kills a call at its limit and returns what is in its folder: the finished steps'
    logs, the running step's log so far, and the tarball as of the last finished step."""
    res = tmp_path / "res"
    out, _ = fake_python(GPU_SUITE, str(res), PACK="1", rules={"bench.sweep": [0, 60]}, kill_after=6)
    assert out.returncode != 0, "killed"
    assert {"suite.tar.gz", "gpu_tests.log", "sweep.log"} <= {p.name for p in res.iterdir()}
    assert "stand-in ran: -m pytest -v --durations=30 -m gpu tests" in (res / "gpu_tests.log").read_text()
    assert "stand-in ran: -m bench.sweep" in (res / "sweep.log").read_text()
    with tarfile.open(res / "suite.tar.gz") as tar:
        tar.getnames()  # a whole archive, not one cut mid-write


def test_gpu_suite_named_ops_and_failures(fake_python, tmp_path):
    res = tmp_path / "res"
    out, calls = fake_python(GPU_SUITE, str(res), "rmsnorm", "rope", rules={"-m rmsnorm or rope": [1, 0]})
    assert out.returncode == 1, "a failing test step must fail the suite"
    steps = [c["args"] for c in calls if c["args"][0] == "-m"]
    assert steps == [["-m", "pytest", "-v", "--durations=30", "-m", "rmsnorm or rope", "tests"],
                     ["-m", "bench.sweep", "--ops", "rmsnorm", "rope", "--out", str(res)],
                     ["-m", "bench.summarize", str(res)]], "every step runs even after a failure"
    assert {"op_tests.log", "sweep.log", "summary.log", "fake_op.csv"} <= {p.name for p in res.iterdir()}


def test_gpu_suite_tests_only(fake_python, tmp_path):
    out, calls = fake_python(GPU_SUITE, str(tmp_path / "res"), SWEEP="0")
    assert out.returncode == 0, out.stdout + out.stderr
    steps = [c["args"] for c in calls if c["args"][0] == "-m"]
    pytest = ["-m", "pytest", "-v", "--durations=30"]
    assert steps == [[*pytest, "-m", "gpu", "tests"], [*pytest, "tests/test_ops.py"]]


def test_gpu_suite_sweep_timeout(fake_python, tmp_path):
    out, calls = fake_python(GPU_SUITE, str(tmp_path / "res"), OPS="silu_and_mul", SWEEP_TIMEOUT="1",
                             rules={"bench.sweep": [0, 30]})
    assert out.returncode == 1 and "=== sweep: exit 124" in out.stdout
    assert calls[-1]["args"][:2] == ["-m", "bench.summarize"], "the summary runs after a timed-out sweep"


def test_gpu_suite_refuses_without_a_gpu_name(fake_python, tmp_path):
    out, calls = fake_python(GPU_SUITE, str(tmp_path / "res"), FAKE_GPU="")
    assert out.returncode == 2 and "no GPU visible" in out.stderr
    assert [c["args"][0] for c in calls] == ["-c"]


def make_wheel(folder: Path, name: str = "tfprobe") -> Path:
    """A minimal pure-Python wheel holding one module."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for n, text in {**files, f"{info}/RECORD": record}.items():
            z.writestr(n, text)
    return path


def test_gpu_engine_installs_wheels_into_a_private_folder(fake_python, tmp_path):
    make_wheel(tmp_path / "wheels")
    site, res = tmp_path / "site", tmp_path / "res"
    out, calls = fake_python(GPU_ENGINE, str(res), WHEEL_DIR=str(tmp_path / "wheels"), WHEEL_SITE=str(site),
                             SERVE_ARGS="--num-prompts 4")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (site / "tfprobe" / "__init__.py").read_text() == "VALUE = 42\n"
    pip, engine, serve = calls
    assert pip["args"][:3] == ["-m", "pip", "install"] and "--no-deps" in pip["args"] and "--no-index" in pip["args"]
    assert engine["args"] == ["bench/engine_bench.py", "--out", str(res)]
    assert serve["args"] == ["bench/serve_bench.py", "--spawn-model", "qwen2.5-0.5b", "--concurrency", "1,16,64",
                             "--out", str(res), "--num-prompts", "4"]
    for call in (engine, serve):
        path = call["pythonpath"].split(":")
        assert path[0] == str(ROOT) and path[-1] == str(site)
    # the carried module imports with the path the benchmarks get
    probe = subprocess.run([sys.executable, "-c", "import tfprobe; print(tfprobe.VALUE)"], capture_output=True,
                           text=True, env=dict(os.environ, PYTHONPATH=engine["pythonpath"]), timeout=60)
    assert probe.stdout.strip() == "42"
    assert {p.name for p in res.iterdir()} == {"engine_bench.log", "serve_bench.log"}


def test_gpu_engine_bad_wheel_and_failing_steps(fake_python, tmp_path):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip file")
    out, calls = fake_python(GPU_ENGINE, str(tmp_path / "res"), WHEEL_DIR=str(tmp_path / "wheels"),
                             WHEEL_SITE=str(tmp_path / "site"), rules={"engine_bench.py": [1, 0]})
    assert out.returncode == 1
    assert "installing the wheels" in out.stderr and "failed" in out.stderr
    ran = [c["args"][0] for c in calls]
    assert ran == ["-m", "bench/engine_bench.py", "bench/serve_bench.py"], "each step runs after a failure"
    assert all(str(tmp_path / "site") not in c["pythonpath"] for c in calls[1:])


def test_gpu_engine_step_timeout(fake_python, tmp_path):
    (tmp_path / "none").mkdir()
    out, calls = fake_python(GPU_ENGINE, str(tmp_path / "res"), WHEEL_DIR=str(tmp_path / "none"),
                             ENGINE_TIMEOUT="1", rules={"engine_bench.py": [0, 30]})
    assert out.returncode == 1
    assert [c["args"][0] for c in calls] == ["bench/engine_bench.py", "bench/serve_bench.py"]


# --- the tune scripts ------------------------------------------------------------------------------------

TUNE_SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("tune_*.py"))


def test_bench_modules_import_without_touching_a_gpu():
    """As on a GPU machine's first import: no interpreter switch, and nothing may need a GPU at import."""
    modules = ["bench.engine_bench", "bench.hf_baseline", "bench.serve_bench", "bench.serve_spawn",
               "bench.model_shapes"]
    modules += [f"bench.{Path(n).stem}" for n in TUNE_SCRIPTS]
    code = f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\nprint('imported')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=quiet_env(), timeout=120)
    assert out.returncode == 0 and "imported" in out.stdout, out.stderr[-3000:]


# One interpreter runs every tune script (as __main__, by path) with the given arguments and reports each
# one's exit code and output: the scripts' imports (torch, triton, kernels) are paid once, not per script.
RUN_SCRIPTS = """
import contextlib, io, json, runpy, sys
results = {}
for script, args in json.loads(sys.argv[1]).items():
    sys.argv = [script, *args]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except Exception as exc:  # recorded as the script's result, which the test asserts on
            code, err = "raised", io.StringIO(f"{type(exc).__name__}: {exc}")
    results[script] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
print(json.dumps(results))
"""


def run_tune_scripts(args_for: dict[str, list[str]]) -> dict:
    out = subprocess.run([sys.executable, "-c", RUN_SCRIPTS, json.dumps(args_for)], cwd=ROOT, capture_output=True,
                         text=True, env=quiet_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_tune_scripts_help():
    results = run_tune_scripts({f"bench/{name}": ["--help"] for name in TUNE_SCRIPTS})
    for script, r in results.items():
        assert r["code"] == 0 and r["stdout"].startswith("usage:"), (script, r)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_tune_scripts_refuse_without_a_gpu(tmp_path):
    positional = ("tune_attention.py", "tune_foundation.py")  # these take the output folder first
    results = run_tune_scripts({f"bench/{name}": [str(tmp_path / name)] if name in positional
                                else ["--out", str(tmp_path / name)] for name in TUNE_SCRIPTS})
    for script, r in results.items():
        assert r["code"] == 2 and "needs a CUDA or ROCm GPU" in r["stderr"], (script, r)
    assert not any(tmp_path.iterdir()), "nothing is written before the refusal"
