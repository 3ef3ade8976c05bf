"""Without triton: every module imports, the torch backend runs the engine, and asking for triton says why not.

pyproject installs triton on Linux only, so on macOS, Windows or a Linux box without it the kernel modules
import through the stand-in of ``kernels._triton``. One subprocess, started with ``sys.modules["triton"]
= None`` (``import triton`` then fails as it does where triton is absent), does the work and reports back
as JSON; the tests compare that report with this process, where triton is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernels import registry
from kernels._triton import _Placeholder, _Triton
from kernels.device import TRITON_MISSING, BackendUnavailable

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import sys
sys.modules["triton"] = None  # before anything imports it

import contextlib, io, json

import torch

from engine.cli import main
from engine.config import EngineConfig
from kernels import registry
from kernels._triton import AVAILABLE
from kernels.device import BackendUnavailable
from tests.test_without_triton import generate_tokens


def cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return {"rc": rc, "out": out.getvalue(), "err": err.getvalue()}


def error_of(fn):
    try:
        fn()
    except BackendUnavailable as e:
        return str(e)
    return None


from kernels.rmsnorm import rmsnorm

report = {
    "triton_available": AVAILABLE,
    "ops": [op.name for op in registry.all_ops()],
    "check_torch": cli("check", "--impl", "torch"),
    "check_triton": cli("check"),
    "demo": cli("demo", "--backend", "torch", "--train-steps", "0", "--max-tokens", "3", "--enforce-eager"),
    "generated": generate_tokens(sys.argv[1]),
    "resolve_triton": {op.name: error_of(lambda: registry.resolve(op.name, "triton", "cpu"))
                       for op in registry.all_ops()},
    "launch_error": error_of(lambda: rmsnorm(torch.randn(2, 8), torch.rand(8) + 0.5)),
    "default_backend_on_gpu": EngineConfig(model="m", device="cuda").resolved().backend,
    "triton_module": repr(sys.modules.get("triton")),
}
print(json.dumps(report))
"""

PROMPTS = ["Once upon a time", "The quick brown fox", "Triton kernels compute"]


def generate_tokens(model_dir) -> dict[str, list]:
    """Greedy and per-request seeded sampled completions of PROMPTS on the torch backend, on the CPU."""
    from engine.llm import LLM
    from engine.sampling_params import SamplingParams

    llm = LLM(str(model_dir), backend="torch", device="cpu")
    params = ([SamplingParams(temperature=0, max_tokens=6)] * len(PROMPTS)
              # Hot enough that the random model's samples differ from its greedy tokens.
              + [SamplingParams(temperature=2.0, top_k=50, top_p=0.9, seed=i, max_tokens=6)
                 for i in range(len(PROMPTS))])
    outs = llm.generate(PROMPTS * 2, params)
    return {"tokens": [o.token_ids for o in outs], "finish": [o.finish_reason for o in outs]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from engine.demo_model import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("without-triton") / "model", hidden_size=64, num_layers=2,
                            num_heads=4, num_kv_heads=2, intermediate_size=128, max_position=128,
                            dtype=torch.float32, seed=3)


@pytest.fixture(scope="module")
def report(model_dir):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(model_dir)], cwd=REPO, env=dict(os.environ),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_triton_stays_unimportable_in_the_subprocess(report):
    assert report["triton_available"] is False
    assert report["triton_module"] == "None"  # nothing put a triton module back


def test_every_op_registers_without_triton(report):
    assert report["ops"] == [op.name for op in registry.all_ops()]


def test_torch_references_pass_every_smoke_case_without_triton(report):
    check = report["check_torch"]
    n = len(report["ops"])
    assert check["rc"] == 0, check["out"] + check["err"]
    assert f"{n}/{n} ops passed" in check["out"]


def test_engine_generates_the_same_tokens_with_and_without_triton(report, model_dir):
    without = report["generated"]
    assert without["finish"] == ["length"] * 2 * len(PROMPTS)
    assert all(len(t) == 6 for t in without["tokens"])
    greedy, sampled = without["tokens"][:len(PROMPTS)], without["tokens"][len(PROMPTS):]
    assert greedy != sampled  # the seeded samples exercise the sampler, not just argmax
    assert without == generate_tokens(model_dir)


def test_demo_runs_without_triton(report):
    demo = report["demo"]
    assert demo["rc"] == 0, demo["out"] + demo["err"]
    assert "backend torch" in demo["out"]


def test_asking_for_triton_says_it_is_not_installed(report):
    assert report["resolve_triton"] == {name: TRITON_MISSING for name in report["ops"]}
    assert report["launch_error"] == TRITON_MISSING


def test_check_says_triton_is_needed(report):
    check = report["check_triton"]
    assert check["rc"] == 1
    assert "triton is not installed" in check["err"] and "--impl torch" in check["err"]


def test_default_backend_on_a_gpu_is_torch_without_triton(report):
    from engine.config import EngineConfig

    assert report["default_backend_on_gpu"] == "torch"
    assert EngineConfig(model="m", device="cuda").resolved().backend == "triton"  # here triton is installed


# --- the stand-in itself, next to the real triton --------------------------------------------------

def test_stand_in_integer_helpers_match_triton():
    import triton

    stand_in = _Triton()
    for n in range(-3, 1100):
        assert stand_in.next_power_of_2(n) == triton.next_power_of_2(n), n
        for d in (1, 3, 16, 128):
            assert stand_in.cdiv(n, d) == triton.cdiv(n, d), (n, d)


def test_stand_in_kernels_define_but_do_not_launch():
    stand_in = _Triton()

    def _kernel(x_ptr, BLOCK):
        return x_ptr

    for kernel in (stand_in.jit(_kernel), stand_in.jit(do_not_specialize=["x_ptr"])(_kernel)):
        assert kernel.__name__ == "_kernel"
        with pytest.raises(BackendUnavailable, match="triton is not installed"):
            kernel[(1,)](torch.ones(4), BLOCK=4)
    with pytest.raises(BackendUnavailable, match=r"triton\.Config: triton is not installed"):
        stand_in.Config({"BLOCK": 16})


def test_stand_in_language_names_are_inert():
    tl = _Placeholder("triton.language")
    table = {torch.float16: tl.float16, torch.float32: tl.float32}  # a dtype table evaluated at import
    assert "triton.language.float16" in repr(table[torch.float16])
    assert "triton.language.math.rsqrt" in repr(tl.math.rsqrt)
    assert "triton is not installed" in repr(tl.constexpr(4))
    with pytest.raises(AttributeError):
        tl.__wrapped__  # noqa: B018  (protocol lookups must fail as on a plain object)
