"""``tritonforge check``: the per-op check on good and broken kernels, its table, and the CLI entry."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import torch

from bench import check
from kernels.registry import Op


def _op(kernel, name="fake_double"):
    # A throwaway op (never registered) whose reference doubles x: the kernel under test is swapped in.
    return Op(
        name=name, triton=kernel, torch=lambda x: 2 * x, cases=lambda profile: None,
        make_inputs=lambda case, device, gen: {"x": torch.randn(case["n"], generator=gen, device=device)
                                               .to(case["dtype"])},
        smoke_cases=lambda: [{"n": 5, "dtype": torch.float32}, {"n": 7, "dtype": torch.float16}],
    )


def test_check_op_passes_a_correct_kernel():
    result = check.check_op(_op(lambda x: x + x), torch.device("cpu"))
    assert result.ok and result.cases == 2 and result.worst == ""


def test_check_op_reports_the_first_failing_case():
    result = check.check_op(_op(lambda x: 2 * x + (x.dtype == torch.float16) * 0.5), torch.device("cpu"))
    assert not result.ok and result.passed == 1
    assert "dtype=float16" in result.worst and "out of tolerance" in result.worst


def test_check_op_survives_a_crashing_kernel():
    def crash(x):
        raise IndexError("kernel blew up")

    result = check.check_op(_op(crash), torch.device("cpu"))
    assert result.passed == 0 and "IndexError: kernel blew up" in result.worst


def test_table_has_one_row_per_op():
    table = check.format_results([
        check.OpResult("rmsnorm", 6, 6, "", 0.4),
        check.OpResult("rope", 6, 5, "[tokens=3] AssertionError: bad", 0.2),
    ])
    lines = table.splitlines()
    assert [c.strip() for c in lines[0].split(" | ")] == ["op", "cases", "status", "worst case"]
    assert any(line.startswith("rmsnorm") and "| ok" in line for line in lines)
    assert any(line.startswith("rope") and "FAIL 1/6" in line and "AssertionError: bad" in line for line in lines)


def test_run_on_registered_ops(capsys):
    rc = check.run(argparse.Namespace(ops=["silu_and_mul", "rope"], impl="triton"))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "2/2 ops passed" in out
    if not torch.cuda.is_available():
        assert "interpreter" in out


def test_run_fails_for_a_missing_impl_and_an_unknown_op(capsys):
    assert check.run(argparse.Namespace(ops=["rope"], impl="no_such_variant")) == 1
    assert "no implementation 'no_such_variant'" in capsys.readouterr().out
    assert check.run(argparse.Namespace(ops=["no_such_op"], impl="triton")) == 2
    assert "registered ops" in capsys.readouterr().err


def test_cli_sets_the_interpreter_before_triton_is_imported():
    # In a fresh interpreter without TRITON_INTERPRET: the CLI and these modules must not import triton,
    # and the switch must set the variable when there is no GPU.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = (
        "import sys, os; import engine.cli, bench.check, bench.sweep; "
        "print('triton' in sys.modules); bench.check.use_interpreter_without_gpu(); "
        "print(os.environ.get('TRITON_INTERPRET'))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    imported, flag = out.stdout.split()
    assert imported == "False"
    assert flag == ("None" if torch.cuda.is_available() else "1")
