"""RoPE specifics: in-place on strided views of a fused qkv row, validation, and the cos/sin cache checked
against transformers' own frequency functions (plain, linear and Llama-3 scaling)."""

from __future__ import annotations

import math

import pytest
import torch

from kernels import rope as rope_module
from kernels.device import BackendUnavailable
from kernels.rope import (
    build_rope_cache,
    rope_inv_freq,
    rotary_embedding,
    rotary_embedding_eager,
)

pytestmark = pytest.mark.rope


def _rotate_pairs(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    # Independent of the module: rotate each (x[i], x[i + D/2]) pair as a complex number in float64.
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    angle = positions.double()[:, None, None] * inv_freq.double()
    z = z * torch.polar(torch.ones_like(angle), angle)
    return torch.cat((z.real, z.imag), dim=-1)


def test_rotates_fused_qkv_views_in_place(device):
    T, hq, hk, D = 5, 4, 2, 16
    qkv = torch.randn(T, (hq + 2 * hk) * D, device=device)
    q = qkv[:, : hq * D].view(T, hq, D)
    k = qkv[:, hq * D : (hq + hk) * D].view(T, hk, D)
    v_before = qkv[:, (hq + hk) * D :].clone()
    q0, k0 = q.clone(), k.clone()
    positions = torch.tensor([0, 7, 3, 100, 511], device=device)
    cache = build_rope_cache(D, 512, theta=10000.0, device=device)
    rotary_embedding(q, k, positions, cache)
    inv_freq = 10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    for got, before in ((q, q0), (k, k0)):
        expected = _rotate_pairs(before.cpu(), positions.cpu(), inv_freq)
        torch.testing.assert_close(got.double().cpu(), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(qkv[:, (hq + hk) * D :], v_before), "v must be left untouched"


def test_position_zero_is_identity(device):
    q, k = torch.randn(2, 3, 8, device=device), torch.randn(2, 1, 8, device=device)
    q0, k0 = q.clone(), k.clone()
    rotary_embedding(q, k, torch.zeros(2, dtype=torch.int64, device=device), build_rope_cache(8, 4, device=device))
    torch.testing.assert_close(q, q0)
    torch.testing.assert_close(k, k0)


def test_eager_baseline_agrees(device):
    q, k = torch.randn(3, 2, 8, device=device), torch.randn(3, 1, 8, device=device)
    positions = torch.tensor([1, 2, 30], device=device)
    cache = build_rope_cache(8, 32, device=device)
    q2, k2 = q.clone(), k.clone()
    rotary_embedding(q, k, positions, cache)
    rotary_embedding_eager(q2, k2, positions, cache)
    torch.testing.assert_close(q, q2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k, k2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(q=torch.randn(2, 3, 7), k=torch.randn(2, 1, 7)), "even"),
        (dict(k=torch.randn(3, 1, 8)), "token count"),
        (dict(k=torch.randn(2, 1, 8, dtype=torch.float16)), "one floating dtype"),
        (dict(positions=torch.tensor([0.0, 1.0])), "positions must be int64"),
        (dict(cos_sin_cache=torch.randn(16, 8, dtype=torch.float16)), "cos_sin_cache must be float32"),
        (dict(positions=torch.tensor([0, 16])), r"cache covers \[0, 15\]"),
        (dict(q=torch.randn(2, 3, 16)[..., ::2]), "unit stride"),
    ],
)
def test_rejects_bad_inputs(bad, match):
    args = dict(q=torch.randn(2, 3, 8), k=torch.randn(2, 1, 8), positions=torch.tensor([0, 1]),
                cos_sin_cache=build_rope_cache(8, 16))
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        rotary_embedding(**args)


def test_unsupported_scaling_lists_the_supported_ones():
    with pytest.raises(ValueError, match="supported: default, linear, llama3"):
        build_rope_cache(64, 16, scaling={"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(ValueError, match="low_freq_factor"):
        build_rope_cache(64, 16, scaling={"rope_type": "llama3", "factor": 8.0})


# --- the cache against transformers ---------------------------------------------------------------

def _hf_inv_freq(head_dim: int, theta: float, scaling: dict | None) -> torch.Tensor:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = {"rope_type": "default", "rope_theta": theta, **(scaling or {})}
    config = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, head_dim=head_dim,
                         max_position_embeddings=131072, rope_parameters=params)
    if params["rope_type"] == "default":
        return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[params["rope_type"]](config, "cpu")
    assert attention_factor == 1.0
    return inv_freq


LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}


@pytest.mark.parametrize("head_dim, theta, scaling", [
    (128, 10000.0, None),
    (64, 1e6, None),
    (128, 500000.0, LLAMA3),
    (64, 500000.0, {**LLAMA3, "factor": 32.0}),
    (128, 10000.0, {"rope_type": "linear", "factor": 4.0}),
    (80, 10000.0, {"type": "linear", "factor": 2.0}),  # the older spelling of the key
])
def test_inv_freq_matches_transformers(head_dim, theta, scaling):
    ours = rope_inv_freq(head_dim, theta, scaling)
    theirs = _hf_inv_freq(head_dim, theta, {"rope_type": scaling.get("type", scaling.get("rope_type")), **{
        k: v for k, v in scaling.items() if k != "type"}} if scaling else None)
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=2e-6, atol=0)


def test_llama3_scaling_changes_only_low_frequencies():
    plain, scaled = rope_inv_freq(128, 500000.0), rope_inv_freq(128, 500000.0, LLAMA3)
    assert torch.equal(plain[:10], scaled[:10])  # short wavelengths are kept
    torch.testing.assert_close(scaled[-5:], plain[-5:] / 8.0)  # long ones divided by the factor


def test_cache_rows_are_cos_then_sin():
    D = 128
    cache = build_rope_cache(D, 131072, theta=500000.0, scaling=LLAMA3)
    assert cache.dtype == torch.float32 and cache.shape == (131072, D)
    # Against transformers' float32 inv_freq, whose rounding (2^-24 relative, inv_freq <= 1) puts an error of
    # up to p * 6e-8 into the angle...
    hf = _hf_inv_freq(D, 500000.0, LLAMA3).double()
    for p in (0, 1, 1000, 8191):
        atol = 1e-6 + p * 1.2e-7
        torch.testing.assert_close(cache[p, : D // 2].double(), (p * hf).cos(), rtol=0, atol=atol)
        torch.testing.assert_close(cache[p, D // 2 :].double(), (p * hf).sin(), rtol=0, atol=atol)
    # ...and at far positions against float64 angles of the inv_freq checked above, to float32 rounding.
    ours = rope_inv_freq(D, 500000.0, LLAMA3)
    for p in (100_000, 131071):
        torch.testing.assert_close(cache[p, : D // 2].double(), (p * ours).cos(), rtol=0, atol=1e-7)
        torch.testing.assert_close(cache[p, D // 2 :].double(), (p * ours).sin(), rtol=0, atol=1e-7)
    assert math.isclose(float(cache[0, 0]), 1.0) and float(cache[0, D // 2]) == 0.0


def test_a_cpu_tensor_without_the_interpreter_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET=1"):
        rotary_embedding(torch.randn(2, 3, 8), torch.randn(2, 1, 8), torch.tensor([0, 1]), build_rope_cache(8, 16))


@pytest.mark.parametrize("gpu, expected", [
    # The CUDA numbers were tuned on an H200; the interpreter uses them too.
    ("cuda", {(14, 2, 32): (16, 2), (32, 8, 64): (8, 2), (1, 1, 1): (1, 1), (64, 8, 16): (32, 2)}),
    ("cpu", {(14, 2, 32): (16, 2), (32, 8, 64): (8, 2), (1, 1, 1): (1, 1), (64, 8, 16): (32, 2)}),
    ("hip", {(14, 2, 32): (16, 1), (32, 8, 64): (16, 2), (1, 1, 1): (1, 1), (64, 8, 16): (64, 2)}),
])
def test_head_block_reads_the_vendor_config_at_launch(monkeypatch, gpu, expected):
    monkeypatch.setattr(rope_module, "vendor", lambda: gpu)
    for (n_q, n_k, half_block), pick in expected.items():
        assert rope_module._pick(n_q, n_k, half_block) == pick, (n_q, n_k, half_block)
    assert rope_module._pick(32, 8, 64, heads=4) == (4, 1)  # the tuning script's override wins
