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
