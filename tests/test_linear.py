"""Linear specifics beyond the generic property test: validation, dispatch, tiling paths, split-K, invariance."""

from __future__ import annotations

import pytest
import torch

from kernels import alloc, registry
from kernels._split_k import _COUNTERS
from kernels.linear import (
    _KERNELS,
    DECODE_MAX_M,
    VARIANTS,
    choose_linear_variant,
    linear,
)
from kernels.linear_decode import SPLIT_UNIT, decode_block_m, decode_chunk, linear_decode_2d
from kernels.linear_gemv import GEMV_UNIT, gemv_chunk, linear_gemv_2d
from kernels.linear_persistent import linear_persistent_2d, persistent_tma
from kernels.linear_prefill import linear_tiled_2d
from kernels.testing import assert_close
from kernels.tma import kernel_descriptors
from tests.linear_helpers import expected, operands

pytestmark = pytest.mark.linear


# --- validation -----------------------------------------------------------------------------------

def test_rejects_mismatched_k(device):
    x, w, _ = operands(3, 8, 16, device)
    with pytest.raises(ValueError, match="mismatched K"):
        linear(x, w[:, :15])


def test_rejects_transposed_weight_with_hint(device):
    x, w, _ = operands(3, 8, 16, device)
    with pytest.raises(ValueError, match="transposed"):
        linear(x, w.T)


def test_rejects_integer_input(device):
    w = torch.ones(4, 8, dtype=torch.int32, device=device)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        linear(torch.ones(2, 8, dtype=torch.int32, device=device), w)


def test_rejects_mixed_dtypes(device):
    x, w, _ = operands(3, 8, 16, device)
    with pytest.raises(TypeError, match="weight dtype"):
        linear(x, w.half())


def test_rejects_bad_bias(device):
    x, w, b = operands(3, 8, 16, device)
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\)"):
        linear(x, w, b[:7])
    with pytest.raises(TypeError, match="bias dtype"):
        linear(x, w, b.half())


def test_rejects_device_mismatch(device):
    x, w, _ = operands(3, 8, 16, device)
    with pytest.raises(ValueError, match="weight is on meta"):
        linear(x, w.to("meta"))


def test_rejects_non_2d_weight_and_unknown_variant(device):
    x, w, _ = operands(3, 8, 16, device)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        linear(x, w[None])
    with pytest.raises(ValueError, match="unknown variant 'splitk'"):
        linear(x, w, variant="splitk")


def test_rejects_zero_k(device):
    with pytest.raises(ValueError, match="at least 1"):
        linear(torch.ones(2, 0, device=device), torch.ones(4, 0, device=device))


# --- dispatch -------------------------------------------------------------------------------------

def test_choose_variant_by_shape():
    assert choose_linear_variant(1, 4096, 4096, torch.bfloat16) == "gemv"
    assert choose_linear_variant(2, 896, 896, torch.bfloat16) == "decode"  # small weights too (run 22)
    assert choose_linear_variant(4, 2048, 2048, torch.bfloat16) == "decode"
    for M in (2, 4, 16, DECODE_MAX_M):
        assert choose_linear_variant(M, 4096, 4096, torch.bfloat16) == "decode"
    for M in (DECODE_MAX_M + 1, 2048, 8192):
        assert choose_linear_variant(M, 4096, 4096, torch.bfloat16) in ("prefill", "persistent")
    assert choose_linear_variant(128, 4096, 14336, torch.bfloat16) == "streamk"  # one row of tiles, long K
    assert choose_linear_variant(129, 4096, 14336, torch.bfloat16) == "persistent"
    assert choose_linear_variant(DECODE_MAX_M, 4096, 14336, torch.bfloat16) == "decode"


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_override_runs_that_kernel(variant, device, monkeypatch):
    called = []
    for name, fn in _KERNELS.items():
        def spy(*args, _name=name, _fn=fn, **kwargs):
            called.append(_name)
            return _fn(*args, **kwargs)
        monkeypatch.setitem(_KERNELS, name, spy)
    x, w, b = operands(5, 24, 40, device)
    y = linear(x, w, b, variant=variant)
    assert called == [variant]
    assert_close(y, expected(x, w, b), dtype=torch.float32, reduction_len=40)


def test_variants_are_registered_as_impls():
    op = registry.get("linear")
    for variant in VARIANTS:
        assert f"linear_{variant}" in op.impls


# --- shapes and layouts ---------------------------------------------------------------------------

def test_leading_dims_and_strided_rows(device):
    base = torch.randn(2, 3, 50, device=device)
    x = base[..., :37]  # rows with a stride larger than the row length
    _, w, b = operands(1, 21, 37, device)
    y = linear(x, w, b)
    assert y.shape == (2, 3, 21)
    assert_close(y, expected(x, w, b), dtype=torch.float32, reduction_len=37)


def test_column_strided_x_is_copied(device):
    x = torch.randn(40, 6, device=device).T  # [6, 40] with stride (1, 6)
    _, w, _ = operands(1, 9, 40, device)
    assert_close(linear(x, w), expected(x, w), dtype=torch.float32, reduction_len=40)


def test_empty_batch(device):
    _, w, b = operands(1, 9, 40, device)
    y = linear(torch.randn(0, 40, device=device), w, b)
    assert y.shape == (0, 9)


@pytest.mark.parametrize("launch", [linear_tiled_2d, linear_persistent_2d])
def test_grouped_tiles_cover_every_output(launch, device):
    """Small explicit tiles so a small problem spans many tiles, groups and (persistent) loop turns."""
    config = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, num_warps=4, num_stages=2)
    if launch is linear_persistent_2d:
        config["FLATTEN"] = False
    x, w, b = operands(70, 51, 40, device, seed=3)
    with alloc.poisoned():
        y = launch(x, w, b, config=config)
    assert_close(y, expected(x, w, b), dtype=torch.float32, reduction_len=40)


@pytest.mark.parametrize("M,N,programs", [
    (70, 51, 7),     # 3 x 2 = 6 tiles of 32 x 32 on 7 programs: all of them a partial wave
    (100, 70, 4),    # 12 tiles on 4: whole waves, nothing to split
    (130, 70, 4),    # 15 tiles on 4: three whole rounds, a tail of 3
    (33, 100, 5),    # 8 tiles on 5: a tail of 3 whose tiles sit on the bottom edge (rows 32-33 of 64)
])
@pytest.mark.parametrize("costs", [(0, 100), (100, 0), (75, 55)])  # halves / quarters / the rule's choice
def test_persistent_split_tail_covers_every_output(M, N, programs, costs, device):
    """The partial last wave cut into halves or quarters, each computed whole along K, writes every output."""
    config = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2, num_warps=4, num_stages=2, FLATTEN=False,
                  COST_2=costs[0], COST_4=costs[1])
    x, w, b = operands(M, N, 70, device, seed=programs)
    with alloc.poisoned():
        y = linear_persistent_2d(x, w, b, config=config, programs=programs)
    assert_close(y, expected(x, w, b), dtype=torch.float32, reduction_len=70)


def _require_kernel_descriptors(device):
    if not kernel_descriptors(device):
        pytest.skip(f"{device.type}: no in-kernel TMA descriptors here (an sm_90+ GPU or Triton >= 3.4's "
                    "interpreter makes them)")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("costs", [(100, 100), (0, 100), (100, 0)])  # whole tiles / halves / quarters
def test_persistent_tma_tiles_cover_every_output(dtype, costs, device):
    """The TMA path: blocks past M, N and K (130 x 70 x 72 on 32 x 32 x 32 tiles) arrive as zeros, and the
    split tail's parts load through their own, smaller descriptors; every output matches the reference and
    the pointer path's."""
    _require_kernel_descriptors(device)
    config = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2, num_warps=4, num_stages=2, FLATTEN=False,
                  COST_2=costs[0], COST_4=costs[1])
    x, w, b = operands(130, 70, 72, device, dtype=dtype, seed=costs[0])
    with alloc.poisoned():
        y = linear_persistent_2d(x, w, b, config=config, programs=4, tma=True)
        y_ptr = linear_persistent_2d(x, w, b, config=config, programs=4, tma=False)
    assert_close(y, expected(x, w, b), dtype=dtype, reduction_len=72)
    assert_close(y, y_ptr.float(), dtype=dtype, reduction_len=72)


def test_persistent_tma_is_chosen_only_where_it_can_read(device):
    _require_kernel_descriptors(device)
    x, w, _ = operands(40, 24, 64, device, dtype=torch.bfloat16)
    assert persistent_tma(x, w, min_macs=0)
    assert not persistent_tma(x, w, min_macs=40 * 24 * 64 + 1)  # a short product: its launch is host-bound
    assert not persistent_tma(x.float(), w.float(), min_macs=0)  # float32, the checking dtype: pointer loads
    odd = torch.randn(40, 70, device=device).to(torch.bfloat16)[:, :64]  # 140-byte rows: not TMA-aligned
    assert not persistent_tma(odd, w, min_macs=0)
    with pytest.raises(ValueError, match="tma=True needs 16-byte aligned rows"):
        linear_persistent_2d(odd, w, None, tma=True)
    assert_close(linear_persistent_2d(odd, w, None), expected(odd, w), dtype=torch.bfloat16, reduction_len=64)


@pytest.mark.parametrize("k_chunk", [16, 48, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_split_k_reduction(k_chunk, dtype, device):
    x, w, b = operands(5, 70, 300, device, dtype=dtype, seed=k_chunk)
    with alloc.poisoned():
        y = linear_decode_2d(x, w, b, k_chunk=k_chunk)
    assert_close(y, expected(x, w, b), dtype=dtype, reduction_len=300)


def test_split_k_counters_rearmed_and_deterministic(device):
    """The arrival counters return to zero after every launch, so a second call sums the same way."""
    x, w, b = operands(3, 50, 200, device, seed=11)
    first = linear_decode_2d(x, w, b, k_chunk=32)
    counters = [t for key, t in _COUNTERS.items() if key[0] == device.type]
    assert counters and all(int(t.abs().sum()) == 0 for t in counters)
    assert torch.equal(linear_decode_2d(x, w, b, k_chunk=32), first)


# --- the split rule and batch invariance ----------------------------------------------------------

def test_decode_chunk_rule():
    for N, K in [(896, 4864), (4096, 4096), (151936, 896), (1152, 896), (4096, 14336), (1, 1)]:
        for M in (1, 16, 64):
            block_m = decode_block_m(M)
            chunk = decode_chunk(N, K, block_m, sms=132)
            assert chunk % SPLIT_UNIT == 0 and chunk >= 1
            splits = -(-K // chunk)
            # the fp32 partials stay under a quarter of the weight bytes at the bucket's largest M
            assert splits == 1 or 8 * block_m * N * splits <= 2 * N * K / 4
    assert decode_chunk(151936, 896, 16, 132) >= 896  # a huge N fills the GPU without splitting K
    assert decode_chunk(16384, 2048, 16, 132) >= 2048  # 256 column tiles come near 2 per SM: no split
    assert decode_chunk(2048, 2048, 16, 132) == 512    # 32 column tiles: four splits of 512
    assert decode_chunk(1152, 896, 16, 132) >= 896     # a small K is never cut (measured: splits cost more)
    assert decode_chunk(2048, 2048, 64, 132) >= 2048   # nor, at the 64-row bucket, K up to 4096
    assert decode_chunk(896, 4864, 64, 132) < 4864     # a longer K still is
    assert decode_chunk(2048, 8192, 64, 132) == 2048   # in four: one program an SM at 64 rows
    assert decode_chunk(2048, 8192, 16, 132) == 1024   # eight at 16 rows: two an SM
    assert decode_chunk(3072, 2048, 16, 132) >= 2048   # 48 column tiles (a third of 132 SMs), K <= 4096: whole
    assert decode_chunk(6144, 4096, 16, 132) >= 4096
    assert decode_chunk(3072, 2048, 16, 264) < 2048    # on a card with twice the SMs, 48 tiles are too few


def test_decode_batch_invariance(device):
    """A row's result is bitwise the same alone or among other rows of the same M bucket."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float16
    x, w, b = operands(16, 300, 1000, device, dtype=dtype, seed=7)
    together = linear(x, w, b, variant="decode")
    for m in (0, 5, 15):
        alone = linear(x[m:m + 1], w, b, variant="decode")
        assert torch.equal(alone[0], together[m]), f"row {m} differs between batch sizes 1 and 16"
    assert torch.equal(linear(x[:7], w, b, variant="decode"), together[:7])


def test_gemv_rows_are_the_same_within_a_row_count(device):
    """Within a row count (M = 3 and 4 both take ROWS = 4) a row's result is bitwise the same whatever
    else is in the batch; across row counts the configs differ and results agree to rounding."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float16
    x, w, b = operands(4, 300, 1000, device, dtype=dtype, seed=8)
    together = linear(x, w, b, variant="gemv")
    assert_close(together, expected(x, w, b), dtype=dtype, reduction_len=1000)
    assert torch.equal(linear(x[:3], w, b, variant="gemv"), together[:3]), "M=3 differs from M=4's rows"
    assert torch.equal(linear(x[1:4], w, b, variant="gemv"), together[1:4]), "rows 1-3 differ from M=4's"
    for m in range(4):
        alone = linear(x[m:m + 1], w, b, variant="gemv")[0]
        assert_close(alone, together[m], dtype=dtype, reduction_len=1000)


@pytest.mark.parametrize("M", [1, 2, 3, 4, 6, 9])
def test_gemv_split_k_and_row_tiles(device, M):
    """Chunks that end inside a tile (k_chunk 96), several splits, bias, and M beyond one ROWS tile."""
    x, w, b = operands(M, 37, 300, device, seed=M)
    for chunk in (None, 96, 512):
        with alloc.poisoned():
            y = linear_gemv_2d(x, w, b, k_chunk=chunk)
        assert_close(y, expected(x, w, b), dtype=torch.float32, reduction_len=300)
    with alloc.poisoned():
        assert_close(linear_gemv_2d(x, w, None), expected(x, w), dtype=torch.float32, reduction_len=300)


def test_gemv_configs_per_row_count():
    """Two to four rows tune over their own tiles, whose four accumulators fit 64 fp32 registers a thread."""
    import triton

    from kernels.linear_gemv import GEMV_CONFIGS, GEMV_ROWS_CONFIGS, _configs_for_rows

    for c in GEMV_ROWS_CONFIGS["cuda"]:
        assert 4 * c["BLOCK_N"] * c["BLOCK_K"] // (32 * c["num_warps"]) <= 64, c
    def as_config(c):
        return triton.Config({k: v for k, v in c.items() if k.startswith("BLOCK")},
                             num_warps=c["num_warps"], num_stages=c["num_stages"])
    every = [as_config(c) for c in GEMV_CONFIGS["cuda"] + GEMV_ROWS_CONFIGS["cuda"]]
    one = _configs_for_rows(every, {}, ROWS=1)
    four = _configs_for_rows(every, {}, ROWS=4)
    assert [(c.kwargs, c.num_warps) for c in one] == [
        ({"BLOCK_N": c["BLOCK_N"], "BLOCK_K": c["BLOCK_K"]}, c["num_warps"]) for c in GEMV_CONFIGS["cuda"]]
    assert len(four) == len(GEMV_ROWS_CONFIGS["cuda"]) and not set(map(id, one)) & set(map(id, four))


def test_gemv_chunk_rule():
    for N, K in [(896, 896), (1152, 896), (896, 4864), (4096, 14336), (151936, 896), (1, 1)]:
        chunk = gemv_chunk(N, K, sms=132)
        assert chunk % GEMV_UNIT == 0 and -(-K // chunk) <= max(1, -(-K // GEMV_UNIT))
        splits = -(-K // chunk)
        assert splits == 1 or -(-N // 16) * splits <= 2 * 132  # within two programs per SM
    assert gemv_chunk(896, 4864, 132) == 1536      # 56 column tiles: four splits of three 512-units
    assert gemv_chunk(151936, 896, 132) >= 896     # the lm_head fills the card unsplit


def test_prefill_kernels_compile_for_hopper():
    """Every CUDA config of the tiled and persistent kernels (pointer loads and TMA) compiles for sm_90
    without spilling: what the interpreter cannot check (bench/aot_linear.py, in a subprocess)."""
    from tests.aot_helpers import run_sm90

    run = run_sm90("bench.aot_linear", "--check")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert run.stdout.count("ok ") >= 12 and "SPILLS" not in run.stdout, run.stdout


# --- GPU: real shapes, every variant --------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("M,N,K", [(2048, 6144, 4096), (1, 151936, 896), (16, 4096, 14336), (333, 4608, 3584)])
def test_real_shapes_bf16_gpu(variant, M, N, K, device):
    x, w, b = operands(M, N, K, device, dtype=torch.bfloat16, seed=M)
    with alloc.poisoned():
        y = linear(x, w, b, variant=variant)
    assert_close(y, expected(x, w, b), dtype=torch.bfloat16, reduction_len=K)


@pytest.mark.gpu
def test_split_k_has_no_race_gpu(device):
    """Many splits racing for each tile's counter: every run must give the same bits and the right answer."""
    x, w, b = operands(16, 4096, 14336, device, dtype=torch.bfloat16, seed=5)
    first = linear_decode_2d(x, w, b, k_chunk=256)
    assert_close(first, expected(x, w, b), dtype=torch.bfloat16, reduction_len=14336)
    for _ in range(20):
        with alloc.poisoned():
            again = linear_decode_2d(x, w, b, k_chunk=256)
        assert torch.equal(again, first), "split-K result changed between identical runs (a race)"
