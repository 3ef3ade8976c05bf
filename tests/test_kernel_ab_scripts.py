"""The kernel A/B and tuning scripts (``bench/quant_gemv_ab.py``, ``bench/impl_ab.py``, ``bench/cold_tune_ab.py``,
``bench/tune_linear.py``, ``bench/copy_at_size.py``), checked on the CPU so that they work the first time on a
lent GPU: each variant pins what it says and puts every setting back, and each script refuses a machine without
a GPU.
"""

from __future__ import annotations

import importlib
import sys

import pytest
import torch


def test_tune_linear_decode_shape_arguments():
    import argparse

    from bench.tune_linear import int_list, shape_list

    assert shape_list("896x896, 1152X896") == [(896, 896), (1152, 896)]
    assert int_list("1,16") == [1, 16]
    for bad in ("8x", "0x4", "axb", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="NxK"):
            shape_list(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="positive"):
        int_list("0")


def test_tune_linear_case_selection():
    """One regime or both, decode first; ``--prefill-m`` gives every prefill weight shape the new token counts,
    ``--decode-m`` keeps the decode cases of the token counts it names."""
    from bench.tune_linear import bench_cases

    every, decode, prefill = bench_cases(), bench_cases("decode"), bench_cases("prefill")
    assert every == decode + prefill and decode and prefill
    assert all(c["M"] <= 64 for c in decode) and all(c["M"] > 64 for c in prefill)
    shapes = {(c["N"], c["K"]) for c in prefill}
    chosen = bench_cases("prefill", [128, 512])
    assert {(c["N"], c["K"]) for c in chosen} == shapes and len(chosen) == 2 * len(shapes)
    assert {c["M"] for c in chosen} == {128, 512}
    kept = bench_cases("decode", decode_m=[16, 64])
    assert kept and {c["M"] for c in kept} == {16, 64}
    assert kept == [c for c in decode if c["M"] in (16, 64)]


def test_cold_tune_ab_forgets_both_tuners_and_refuses_a_cpu(tmp_path, monkeypatch):
    """Between its two modes the A/B drops a kernel's choices from both tuners (so each mode tunes on the
    same inputs); with nothing tuned it reports no config; on a CPU it says it needs a GPU."""
    from bench import cold_tune_ab
    from kernels.tuning import Tuned

    tuned = Tuned(lambda: None, {"cuda": [dict(BLOCK=16)]}, key=["N"], cold_weight="w_ptr")
    tuned._built, tuned._cold = object(), object()
    cold_tune_ab._forget(tuned)
    assert tuned._built is None and tuned._cold is None
    assert cold_tune_ab._choice(tuned, "autotune") == "-" and cold_tune_ab._choice(tuned, "autotune-warm") == "-"
    assert set(cold_tune_ab._variant_fns(4, 896, True, [])) == {"decode", "decode_1split", "gemv"}
    assert set(cold_tune_ab._variant_fns(16, 896, True, [])) == {"decode", "decode_1split"}
    # Split counts that K (in whole SPLIT_UNITs) allows, and each computes the product.
    assert set(cold_tune_ab._variant_fns(64, 8192, False, [1, 2, 4, 8])) == {f"decode_s{n}" for n in (1, 2, 4, 8)}
    fns = cold_tune_ab._variant_fns(3, 1024, False, [1, 2, 4])
    assert set(fns) == {"decode_s1", "decode_s2"}
    if not torch.cuda.is_available():
        gen = torch.Generator().manual_seed(0)
        x, w = torch.randn(3, 1024, generator=gen), torch.randn(24, 1024, generator=gen)
        for _, fn in fns.values():
            torch.testing.assert_close(fn(x, w), (x.double() @ w.double().T).float(), atol=2e-3, rtol=1e-3)
    if not torch.cuda.is_available():
        monkeypatch.setattr(sys, "argv", ["cold_tune_ab", "--csv", str(tmp_path / "ab.csv")])
        assert cold_tune_ab.main() == 2 and not (tmp_path / "ab.csv").exists()


@pytest.mark.parametrize("kernel", ["w4a16", "w8a16"])
def test_quant_gemv_ab_variants_pin_each_config_and_restore_the_settings(tmp_path, kernel):
    from bench import quant_gemv_ab
    from kernels import _quant_gemv
    from kernels import quant_linear as ql
    from kernels.quant_pack import quantize_w4, quantize_w8
    from kernels.testing import assert_close

    chosen, split = ql.x_quads, (ql.W4_GEMV_PROGRAMS_PER_SM, ql.W4_SPLIT_GROUPS)
    kernels = ql._w4a16_gemv.kernel, ql._w8a16_gemv.kernel
    variants = quant_gemv_ab._variants(kernel, [4, 8], [1, 2], singles=True, edits={"edited": _quant_gemv})
    shipped = [v for v in variants if v[0] == "shipped"]
    edited = [v for v in variants if v[0] == "edited"]
    mma = [v for v in variants if v[0] == "mma"]
    assert [v[2] for v in mma] == importlib.import_module(f"kernels.{kernel}_mma_gemv").CONFIGS["cuda"]
    if kernel == "w4a16":
        configs = ql.W4_GEMV_CONFIGS["cuda"]
        gpi1 = sum(c["GROUPS_PER_ITER"] == 1 for c in configs)
        # a split unit of one group is no whole number of trips of two groups: those configs skip it
        assert [v[4] for v in shipped].count("quads") == 2 * (len(configs) + gpi1)
        assert len(edited) == gpi1 and all(v[3] == (4, 1) for v in edited)  # the first aim and unit only
    else:
        assert [v[4] for v in shipped].count("quads") == len(ql.W8_GEMV_CONFIGS["cuda"])
        assert len(edited) == len(ql.W8_GEMV_CONFIGS["cuda"])
    no_mma = [v for v in variants if v[0] in ("no-mma", "tiles")]
    assert [v[0] for v in no_mma] == ["no-mma"] + (["tiles"] if kernel == "w8a16" else [])
    if torch.cuda.is_available():  # the launches below use CPU tensors, which only the interpreter runs
        return
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(24, 256, generator=gen)
    x = torch.randn(1, 256, generator=gen).to(torch.bfloat16)
    if kernel == "w4a16":
        q, s, z = quantize_w4(w, 128)
        weights = {"q": q, "s": s.to(torch.bfloat16), "z": z.to(torch.bfloat16)}
        want = ql.w4a16_linear_reference(x.double(), q, weights["s"].double(), weights["z"].double(), 128)
    else:
        q, s = quantize_w8(w)
        weights = {"q": q, "s": s.to(torch.bfloat16)}
        want = ql.w8a16_linear_reference(x.double(), q, weights["s"].double())
    rows = (ql.W4_MMA_ROWS, ql.W8_MMA_ROWS, ql.W8_GEMV_MAX_M)
    for code, label, _config, _split, x_loads, fn in variants[:6] + edited[:2] + mma[:1] + no_mma:
        got = fn(x, **weights)
        assert ql.x_quads is chosen and split == (ql.W4_GEMV_PROGRAMS_PER_SM, ql.W4_SPLIT_GROUPS), \
            f"{label} {x_loads} left a setting patched"
        assert rows == (ql.W4_MMA_ROWS, ql.W8_MMA_ROWS, ql.W8_GEMV_MAX_M), f"{label} left a row limit patched"
        assert (ql._w4a16_gemv.kernel, ql._w8a16_gemv.kernel) == kernels, f"{code} {label} left its kernels in"
        assert_close(got, want, dtype=torch.bfloat16, reduction_len=256, what=f"{label} {x_loads}")
    assert quant_gemv_ab.main(["--csv", str(tmp_path / "ab.csv")]) == 2 and not (tmp_path / "ab.csv").exists()


AB_CASES = [{"rows": 3, "dim": 40, "dtype": torch.float32}]


def test_impl_ab_compares_variants_with_the_first_and_refuses_without_a_gpu(tmp_path, monkeypatch):
    from bench import impl_ab
    from kernels import registry

    op = registry.get("rmsnorm")
    monkeypatch.setattr(op, "impls", dict(op.impls))  # the variants below leave with the test
    monkeypatch.setattr(op, "impl_backends", dict(op.impl_backends))
    registry.register_impl("rmsnorm", "same_rmsnorm", op.torch, backend="torch")
    registry.register_impl("rmsnorm", "off_rmsnorm", lambda *a, **kw: op.torch(*a, **kw) * 1.5, backend="torch")
    case = op.smoke_cases()[0]
    inputs = op.make_inputs(case, torch.device("cpu"), torch.Generator().manual_seed(0))
    checks = impl_ab.compare(op, ["torch", "same_rmsnorm", "off_rmsnorm"], inputs)
    assert checks["torch"] == (True, 0.0) and checks["same_rmsnorm"] == (True, 0.0)
    assert checks["off_rmsnorm"][0] is False and checks["off_rmsnorm"][1] > 0
    assert impl_ab.load_cases(op, None) == list(op.bench_cases())
    assert impl_ab.load_cases(op, f"{__name__}:AB_CASES") == AB_CASES
    with pytest.raises(ValueError, match="MODULE:NAME"):
        impl_ab.load_cases(op, "tests.test_gpu_scripts")
    with pytest.raises(KeyError, match="no implementation 'missing'"):
        impl_ab.main(["rmsnorm", "--impls", "triton", "missing"])
    if not torch.cuda.is_available():
        assert impl_ab.main(["rmsnorm", "--csv", str(tmp_path / "ab.csv")]) == 2
        assert not (tmp_path / "ab.csv").exists()


def test_impl_ab_compares_tuple_outputs_element_by_element():
    from bench import impl_ab

    class TupleOp:  # an op whose implementations return several tensors (sampling, say)
        mutates = ()

        def __init__(self, fns):
            self.fns = fns

        def impl(self, name):
            return self.fns[name]

    fns = {"first": lambda x: (x, x.long()), "same": lambda x: (x.clone(), x.long()),
           "off": lambda x: (x + 1, x.long()), "short": lambda x: (x,)}
    checks = impl_ab.compare(TupleOp(fns), list(fns), {"x": torch.arange(6.0)})
    assert checks["same"] == (True, 0.0) and checks["off"] == (False, 1.0)
    assert checks["short"] == (False, float("inf"))


def test_copy_at_size_selects_cases_and_refuses_a_cpu(tmp_path, monkeypatch):
    """``--where`` keeps the cases it names (values compared as text), a malformed filter says what it wants,
    the copy's buffers hold half the case's bytes each (read + written: the case's total) in whole 4 KiB
    pages, and on a CPU the script says it needs a GPU and writes nothing."""
    import argparse

    from bench import copy_at_size
    from kernels import registry

    cases = list(registry.get("kv_cache_write").bench_cases())
    two = copy_at_size.selected(cases, copy_at_size.parse_where(["kv_heads=2", "tokens=4096"]))
    assert two and all(c["kv_heads"] == 2 and c["tokens"] == 4096 for c in two)
    assert len(two) < len(cases) and copy_at_size.selected(cases, {"no_such_key": "1"}) == []
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        copy_at_size.parse_where(["batch"])
    pair = copy_at_size.copy_pair(3 * 8192, device="cpu")
    assert pair["src"].numel() == pair["dst"].numel() == 3 * 4096
    assert copy_at_size.copy_pair(1000, device="cpu")["src"].numel() == 4096  # rounded up to a 4 KiB multiple
    assert copy_at_size.pct_of(2e9, 1.0, 4000.0) == pytest.approx(50.0)  # 2 GB in 1 ms = 2000 GB/s
    if not torch.cuda.is_available():
        monkeypatch.setattr(sys, "argv", ["copy_at_size", "--csv", str(tmp_path / "c.csv")])
        assert copy_at_size.main() == 2 and not (tmp_path / "c.csv").exists()
