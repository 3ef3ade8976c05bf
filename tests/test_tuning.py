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
    with pytest.raises(ValueError, match=r"TRITONFORGE_TUNE=.fastest.*autotune, first, autotune-warm"):
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


def test_cold_weights_name_an_argument_of_their_kernel():
    """A kernel tuned with its weight cold rotates an argument it takes; a wrong name fails at once."""
    from kernels.cold_autotune import ColdWeightTuner

    cold = {name: t for name, t in _tuned_kernels().items() if t.cold_weight is not None}
    assert len(cold) >= 8, sorted(cold)  # the decode GEMVs of the engine and of the quantized formats
    for name, t in cold.items():
        assert t.cold_weight in t.kernel.arg_names, name
    t = next(iter(cold.values()))
    with pytest.raises(ValueError, match="no argument 'weights' to rotate"):
        ColdWeightTuner(t.kernel, [], t.key, "weights")


def test_cold_rotation_outgrows_l2_within_its_memory_cap():
    from kernels.cold_autotune import L2_MULTIPLE, MAX_COPY_BYTES, copies_needed

    l2 = 50 << 20
    for size in (1, 4096, 896 * 896 * 2, 4 << 20, 20 << 20, l2):
        n = copies_needed(size, l2)
        assert n * size >= min(L2_MULTIPLE * l2, MAX_COPY_BYTES - size + 1), size
        assert n == 1 or n * size <= MAX_COPY_BYTES, size
    assert copies_needed(l2 + 1, l2) == 1  # a weight larger than L2 is never cached whole: no copies
    assert copies_needed(0, l2) == 1


def test_tuning_key_is_the_key_values_then_the_dtypes():
    import torch

    from kernels.cold_autotune import tuning_key

    x, w = torch.zeros(2, dtype=torch.bfloat16), torch.zeros(2, dtype=torch.float32)
    named = {"x_ptr": x, "w_ptr": w, "N": 896, "K": 4864, "ROWS": 1}
    assert tuning_key(named, ["N", "K", "ROWS"]) == (896, 4864, 1, "torch.bfloat16", "torch.float32")
    assert tuning_key(named, ["N", "K"]) != tuning_key({**named, "K": 896}, ["N", "K"])


@pytest.mark.gpu
def test_cold_weight_autotuning_picks_a_config_that_computes_the_product():
    """On a GPU: the GEMV autotuned with its weight rotated times several configs, keeps the fastest for the
    key, and the launch with it matches an fp32 product (weights and x random, the output poisoned first)."""
    import torch

    from kernels import linear_gemv
    from kernels.alloc import poisoned

    torch.manual_seed(0)
    x = torch.randn(1, 896, device="cuda", dtype=torch.bfloat16)
    w = (torch.randn(1152, 896, device="cuda") / 30).to(torch.bfloat16)
    with tuning("autotune"), poisoned():
        y = linear_gemv.linear_gemv_2d(x, w, None)
    tuner = linear_gemv._gemv._cold
    assert tuner is not None and tuner.choices, "the cold tuner did not run"
    key = next(k for k in tuner.choices if 1152 in k and 896 in k)
    assert len(tuner.timings[key]) > 1 and min(tuner.timings[key].values()) > 0
    ref = x.float() @ w.float().T
    torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=2e-2)


class _FakeKernel:
    """Stands in for a @triton.jit kernel: records launches; ``cost`` gives each BLOCK's time, None a config
    that fails to compile."""

    __name__ = "fake_gemv"
    arg_names = ("x_ptr", "w_ptr", "N", "BLOCK")
    cache_key = "fake-gemv-source-hash"

    def __init__(self, cost):
        self.cost, self.launches = cost, []

    def __getitem__(self, grid):
        def launch(x, w, N, **meta):
            if self.cost[meta["BLOCK"]] is None:
                from triton.runtime.errors import OutOfResources

                raise OutOfResources(1 << 20, 1 << 16, "shared memory")
            self.launches.append((w.data_ptr(), meta["BLOCK"]))
        return launch


def test_cold_tuner_rotates_the_weight_and_keeps_the_fastest_config(monkeypatch, tmp_path):
    """The tuner's logic on a CPU, with the graph timer replaced: every timed launch gets its weight from the
    rotation (copies, not the launch's own alone), a config that cannot compile is skipped, the fastest is
    kept per key and launched, a second launch of the same key times nothing, and a new tuner (a second
    start) finds the choice in the cache folder."""
    import torch

    from kernels import cold_autotune
    from kernels.tuning import to_config

    kernel = _FakeKernel({16: 3.0, 32: 1.0, 64: None})
    timed = []

    def fake_bench(fn, rep, return_mode):
        before = len(kernel.launches)
        for _ in range(8):
            fn()
        blocks = {b for _, b in kernel.launches[before:]}
        timed.append({p for p, _ in kernel.launches[before:]})
        return kernel.cost[blocks.pop()]

    monkeypatch.setattr(cold_autotune.triton.testing, "do_bench_cudagraph", fake_bench)
    monkeypatch.setattr(cold_autotune, "_l2_bytes", lambda device: 4096)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    configs = [to_config(dict(BLOCK=b, num_warps=4)) for b in (16, 32, 64)]
    tuner = cold_autotune.ColdWeightTuner(kernel, configs, key=["N"], weight_arg="w_ptr")
    x, w = torch.randn(4), torch.randn(64)  # 256 bytes: 3 x 4096 / 256 = 48 copies
    tuner[(1,)](x, w, 64)
    assert len(timed) == 2 and all(len(ptrs) == 8 and w.data_ptr() in ptrs for ptrs in timed)
    assert kernel.launches[-1] == (w.data_ptr(), 32)  # the real launch: its own weight, the fastest config
    key = (64, "torch.float32", "torch.float32")
    assert tuner.choices[key].kwargs["BLOCK"] == 32
    assert tuner.timings[key][str(configs[2])] == float("inf")
    tuner[(1,)](x, w, 64)
    assert len(timed) == 2 and kernel.launches[-1] == (w.data_ptr(), 32)
    again = cold_autotune.ColdWeightTuner(_FakeKernel({16: 3.0, 32: 1.0, 64: None}), configs, key=["N"],
                                          weight_arg="w_ptr")
    again[(1,)](x, w, 64)
    assert len(timed) == 2 and again.kernel.launches == [(w.data_ptr(), 32)]
    assert any(tmp_path.rglob("fake_gemv.cold.json"))


def test_cold_tuner_takes_the_copies_memory_allows(monkeypatch):
    """Out of device memory while copying the weight, the rotation is shorter, not an error."""
    import torch

    from kernels import cold_autotune

    w, made = torch.randn(8), []
    real_clone = torch.Tensor.clone

    def clone(self, *a, **k):
        if len(made) == 3:
            raise torch.cuda.OutOfMemoryError("no room for a fourth copy")
        made.append(1)
        return real_clone(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "clone", clone)
    copies = cold_autotune._copies(w, 10)
    assert len(copies) == 3 and all(torch.equal(c, w) and c.data_ptr() != w.data_ptr() for c in copies)
