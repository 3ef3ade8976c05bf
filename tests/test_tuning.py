"""The tuning switch: ``TRITONFORGE_TUNE`` picks autotuning or the first config, and says so when wrong."""

from __future__ import annotations

import pytest

from kernels.tuning import Tuned, tune_mode, tuning


def test_mode_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("TRITONFORGE_TUNE", raising=False)
    assert tune_mode() == "autotune"
    monkeypatch.setenv("TRITONFORGE_TUNE", "first")
    assert tune_mode() == "first"


def test_unknown_mode_is_an_error_naming_the_choices(monkeypatch):
    monkeypatch.setenv("TRITONFORGE_TUNE", "fastest")
    with pytest.raises(ValueError, match=r"TRITONFORGE_TUNE=.fastest.*autotune, first"):
        tune_mode()
    with pytest.raises(ValueError, match="autotune, first"), tuning("sometimes"):
        pass


def test_tuning_block_restores_the_setting(monkeypatch):
    monkeypatch.setenv("TRITONFORGE_TUNE", "first")
    with tuning("autotune"):
        assert tune_mode() == "autotune"
    assert tune_mode() == "first"
    monkeypatch.delenv("TRITONFORGE_TUNE")
    with tuning("first"):
        assert tune_mode() == "first"
    assert tune_mode() == "autotune"


def test_candidates_are_filtered_per_vendor_and_never_empty():
    configs = {"cuda": [dict(BLOCK=16, num_warps=4), dict(BLOCK=64, num_warps=8)], "hip": [dict(BLOCK=32)]}
    tuned = Tuned(lambda: None, configs, key=["N"], keep=lambda c: c["BLOCK"] > 16)
    assert tuned.candidates("cuda") == [dict(BLOCK=64, num_warps=8)]
    assert tuned.candidates("hip") == [dict(BLOCK=32)]
    with pytest.raises(RuntimeError, match="every cuda config was pruned"):
        Tuned(lambda: None, configs, key=["N"], keep=lambda c: False).candidates("cuda")
    with pytest.raises(RuntimeError, match="no configs for 'cpu'"):
        tuned.candidates("cpu")


def test_engine_warm_up_covers_every_prefill_bucket():
    """The runner's start-up launches reach every M bucket a step of up to ``top`` tokens can hit."""
    from engine.warm_up import warm_up_token_counts
    from kernels.linear_decode import decode_block_m
    from kernels.linear_prefill import m_bucket

    for top in (1, 2, 3, 17, 100, 512, 1000, 8192, 16384, 20000):
        counts = warm_up_token_counts(top)
        assert max(counts) == top and all(1 <= c <= top for c in counts)
        for bucket in (m_bucket, decode_block_m):
            assert {bucket(c) for c in counts} == {bucket(m) for m in range(1, top + 1)}, (top, bucket)


def test_engine_warm_up_covers_every_sampler_class():
    from engine.warm_up import warm_up_sample_batches
    from kernels.sampling import _batch_bucket

    for max_seqs in range(1, 300):
        batches = warm_up_sample_batches(max_seqs)
        assert all(1 <= b <= max_seqs for b in batches)
        assert {_batch_bucket(b) for b in batches} == {_batch_bucket(b) for b in range(1, max_seqs + 1)}


def _tuned_kernels():
    """Every Tuned of the kernel modules, found in module globals (and one level into dicts and tuples)."""
    import importlib
    import pkgutil

    import kernels

    found = {}
    for info in pkgutil.iter_modules(kernels.__path__):
        module = importlib.import_module(f"kernels.{info.name}")
        for name, value in vars(module).items():
            inner = value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else [value]
            for item in inner:
                for obj in item if isinstance(item, tuple) else (item,):
                    if isinstance(obj, Tuned):
                        found[f"{info.name}.{name}:{obj.kernel.__name__}"] = obj
    return found


def test_every_config_names_only_what_its_kernel_takes():
    """A config key the kernel does not take fails only when the autotuner launches that config on a GPU
    (the interpreter and the GPU tests launch the first config alone), so every list is checked here."""
    from kernels.tuning import LAUNCH_OPTIONS

    amd_knobs = {"waves_per_eu", "matrix_instr_nonkdim", "kpack"}
    tuned = _tuned_kernels()
    assert len(tuned) >= 10, sorted(tuned)  # the search itself works
    for name, t in tuned.items():
        params = set(t.kernel.arg_names)
        for which, configs in t.configs.items():
            allowed = params | set(LAUNCH_OPTIONS) | (amd_knobs if which == "hip" else set())
            for c in configs:
                unknown = set(c) - allowed
                assert not unknown, f"{name} {which} config {c} names {sorted(unknown)}, not taken by the kernel"
