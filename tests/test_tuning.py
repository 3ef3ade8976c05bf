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
