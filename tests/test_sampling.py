"""The sample op beyond the generic property test: exact cases, penalties, logprobs, seeds, validation.

Expected values here come from small hand-written computations (plain Python over a few logits), not
from the module under test. Interpreter shapes stay tiny: every reduction costs milliseconds there.
"""

from __future__ import annotations

import math

import pytest
import torch

from kernels import registry
from kernels._sampling_params import RequestParams as P
from kernels._sampling_reference import kept_mask, processed_logits
from kernels.sampling import CONFIGS, SamplingParamsError, SamplingTensors, launch, sample, sample_reference
from kernels.testing import run_case

pytestmark = pytest.mark.sample


def build(params, device, vocab, prompts=None, outputs=None, seeds=None):
    B = len(params)
    return SamplingTensors.build(params, prompts or [[]] * B, outputs or [[]] * B,
                                 seeds if seeds is not None else list(range(B)), vocab, device)


def test_greedy_is_argmax_with_ties_to_lowest_index(device):
    logits = torch.tensor([[0.5, 2.0, -1.0, 2.0, 1.9],      # tie: 1 and 3
                           [-3.0, -3.0, -3.0, -3.0, -3.0],  # all tied: 0
                           [1.0, float("-inf"), 7.5, 0.0, 7.25]], device=device)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        out = sample(logits.to(dtype), build([P(temperature=0.0)] * 3, device, 5))
        assert out.token_ids.tolist() == [1, 0, 2]


def test_vanishing_temperature_is_greedy_not_an_overflow(device):
    """x / 1e-39 overflows float32; such a row is greedy, in the kernel and the reference alike."""
    g = torch.Generator(device=device).manual_seed(3)
    logits = 10 * torch.randn(3, 257, generator=g, device=device)
    st = build([P(temperature=1e-39, top_p=0.5), P(temperature=5e-6, top_k=3), P(temperature=0.0)],
               device, 257)
    want = logits.argmax(1).tolist()
    assert sample(logits, st).token_ids.tolist() == want
    assert sample_reference(logits, st).token_ids.tolist() == want


def test_greedy_row_ignores_filters_and_neighbours(device):
    g = torch.Generator(device=device).manual_seed(1)
    logits = torch.randn(4, 300, generator=g, device=device)
    params = [P(temperature=0.0, top_k=3, top_p=0.2, min_p=0.5), P(temperature=1.0, top_k=5),
              P(temperature=0.0), P(temperature=0.7, top_p=0.5)]
    out = sample(logits, build(params, device, 300))
    expected = logits.argmax(-1)
    assert out.token_ids[0] == expected[0] and out.token_ids[2] == expected[2]


def _hand_filter(z: list[float], top_k: int, top_p: float, min_p: float) -> set[int]:
    """The kept set by the documented rule, in plain Python (ties at a threshold kept)."""
    m = max(z)
    keep = {i for i, v in enumerate(z) if min_p == 0 or v >= m + math.log(min_p)}
    if top_k:
        kth = sorted((z[i] for i in keep), reverse=True)[min(top_k, len(keep)) - 1]
        keep = {i for i in keep if z[i] >= kth}
    if top_p < 1:
        total = sum(math.exp(z[i] - m) for i in keep)
        cum = 0.0
        for v in sorted({z[i] for i in keep}, reverse=True):
            cum += sum(math.exp(z[i] - m) for i in keep if z[i] == v)
            if cum >= top_p * total:
                keep = {i for i in keep if z[i] >= v}
                break
    return keep


@pytest.mark.parametrize("top_k,top_p,min_p", [(3, 1.0, 0.0), (0, 0.5, 0.0), (0, 1.0, 0.3), (6, 0.7, 0.05),
                                               (1, 1.0, 0.0), (4, 1.0, 0.0)])
def test_every_draw_lies_in_the_kept_set(device, top_k, top_p, min_p):
    # Distinct, spread values, plus a tie at the 4th place to check that ties at a threshold are kept.
    z = [2.0, 1.5, 1.25, 0.75, 0.75, 0.0, -0.5, -1.0, -2.0, -4.0, 1.0, -0.25]
    n = 24
    logits = torch.tensor([z] * n, device=device)
    out = sample(logits, build([P(temperature=1.0, top_k=top_k, top_p=top_p, min_p=min_p)] * n, device, len(z)))
    allowed = _hand_filter(z, top_k, top_p, min_p)
    drawn = set(out.token_ids.tolist())
    assert drawn <= allowed, f"drew {sorted(drawn - allowed)} outside the kept set {sorted(allowed)}"
    if len(allowed) > 1:
        assert len(drawn) > 1, "24 seeds all drew the same token: the noise is not varying"


def test_masked_tokens_are_never_drawn(device):
    z = torch.zeros(16, 40, device=device)
    z[:, ::2] = float("-inf")
    out = sample(z, build([P(temperature=2.0)] * 16, device, 40, seeds=[7 * i for i in range(16)]))
    assert (out.token_ids % 2 == 1).all()


def test_draws_equal_the_reference_draws(device):
    # The reference computes the kernel's noise: the same inputs give the same tokens.
    g = torch.Generator(device=device).manual_seed(3)
    B, V = 12, 80
    logits = 2.0 * torch.randn(B, V, generator=g, device=device)
    params = [P(temperature=0.8, top_k=k, top_p=p, min_p=mp, repetition_penalty=r, presence_penalty=0.5)
              for k, p, mp, r in zip([0, 5, 20, 0] * 3, [1.0, 0.9, 0.6] * 4, [0.0, 0.0, 0.1, 0.2] * 3,
                                     [1.0, 1.2] * 6, strict=True)]
    st = build(params, device, V, prompts=[[1, 2, 3]] * B, outputs=[[4, 4, 9]] * B, seeds=[11 * i for i in range(B)])
    assert sample(logits, st).token_ids.tolist() == sample_reference(logits.double(), st).token_ids.tolist()


def test_same_seed_and_step_give_the_same_token_in_any_batch(device):
    g = torch.Generator(device=device).manual_seed(4)
    V = 64
    row = torch.randn(V, generator=g, device=device)
    mine = P(temperature=1.0, top_p=0.95)
    other = torch.randn(7, V, generator=g, device=device)
    # Batch A: the row first, with plain neighbours; batch B: the row last, with edited neighbours (bias),
    # which also switches the kernel to its edits-enabled variant.
    a = sample(torch.stack([row, other[0], other[1]]),
               build([mine, P(), P(top_k=3)], device, V, outputs=[[5, 6], [], []], seeds=[42, 1, 2]))
    b_params = [P(logit_bias={3: 2.0})] * 4 + [mine]
    b = sample(torch.cat([other[2:6], row[None]]),
               build(b_params, device, V, outputs=[[]] * 4 + [[9, 9]], seeds=[5, 6, 7, 8, 42]))
    assert a.token_ids[0] == b.token_ids[4]  # same seed, same step (2 tokens generated so far)
    steps = [sample(row[None], build([mine], device, V, outputs=[[0] * s], seeds=[42])).token_ids.item()
             for s in range(8)]
    assert len(set(steps)) > 1, "the step counter does not change the draw"


def _penalised(x, prompt, output, rep, pres, freq, bias):
    """Hugging Face repetition penalty, OpenAI presence/frequency penalties, logit bias: plain Python."""
    y = list(x)
    for t in range(len(y)):
        y[t] += bias.get(t, 0.0)
        if t in prompt or t in output:
            y[t] = y[t] / rep if y[t] > 0 else y[t] * rep
        c = output.count(t)
        y[t] -= freq * c + (pres if c else 0.0)
    return y


def test_penalties_and_bias_change_the_greedy_token_as_specified(device):
    x = [3.0, 2.9, -1.0, 2.5, 0.2, 2.0, -0.5, 1.0]
    prompt, output = [0, 6], [1, 1, 5]
    cases = [dict(rep=1.5, pres=0.0, freq=0.0, bias={}),        # 0 -> 2.0, 1 -> 1.93: token 3 wins
             dict(rep=1.0, pres=0.0, freq=0.3, bias={}),        # 1 -> 2.3: 0 stays
             dict(rep=1.0, pres=0.5, freq=0.2, bias={7: 2.5}),  # 7 -> 3.5 wins
             dict(rep=2.0, pres=1.0, freq=1.0, bias={2: 1.0})]  # 2 -> 0.0 (not in context)
    params = [P(temperature=0.0, repetition_penalty=c["rep"], presence_penalty=c["pres"],
                frequency_penalty=c["freq"], logit_bias=c["bias"], logprobs=2) for c in cases]
    n = len(cases)
    out = sample(torch.tensor([x] * n, device=device), build(params, device, len(x), [prompt] * n, [output] * n))
    for i, c in enumerate(cases):
        y = _penalised(x, prompt, output, c["rep"], c["pres"], c["freq"], c["bias"])
        best = max(range(len(y)), key=lambda t, y=y: (y[t], -t))
        lse = math.log(sum(math.exp(v) for v in y))
        assert out.token_ids[i].item() == best, f"case {i}: {y}"
        assert out.logprobs[i].item() == pytest.approx(y[best] - lse, rel=1e-5, abs=1e-5)
        second = max((t for t in range(len(y)) if t != best), key=lambda t, y=y: (y[t], -t))
        assert out.top_ids[i].tolist() == [best, second]
        assert out.top_logprobs[i].tolist() == pytest.approx([y[best] - lse, y[second] - lse], rel=1e-5, abs=1e-5)


def test_logprobs_are_of_the_tempered_distribution_with_padding(device):
    g = torch.Generator(device=device).manual_seed(5)
    V = 150
    logits = torch.randn(3, V, generator=g, device=device)
    logits[1, 10] = logits[1, 20] = logits[1].max() + 1.0  # a tie at the top: lower index first
    params = [P(temperature=0.5, logprobs=5), P(temperature=0.0, logprobs=3), P(temperature=1.0, top_k=4)]
    out = sample(logits, build(params, device, V))
    z = torch.stack([logits[0] / 0.5, logits[1], logits[2]]).double().cpu()
    logp = torch.log_softmax(z, -1)
    assert out.top_ids.shape == (3, 5)
    assert out.top_ids[2].tolist() == [-1] * 5 and torch.isneginf(out.top_logprobs[2]).all()
    assert out.top_ids[1, 3:].tolist() == [-1, -1]
    assert out.top_ids[1, :2].tolist() == [10, 20]
    for r, n in ((0, 5), (1, 3)):
        vals, ids = torch.sort(logp[r], descending=True, stable=True)
        assert out.top_ids[r, :n].tolist() == ids[:n].tolist()
        torch.testing.assert_close(out.top_logprobs[r, :n].cpu().double(), vals[:n], rtol=1e-5, atol=1e-5)
    chosen = logp.gather(1, out.token_ids.cpu()[:, None])[:, 0]
    torch.testing.assert_close(out.logprobs.cpu().double(), chosen, rtol=1e-5, atol=1e-5)


def test_reference_kept_mask_matches_the_hand_rule():
    z = [2.0, 1.5, 1.25, 0.75, 0.75, 0.0, -0.5, -1.0, -2.0, -4.0, 1.0, -0.25]
    for k, p, mp in [(3, 1.0, 0.0), (0, 0.5, 0.0), (0, 1.0, 0.3), (6, 0.7, 0.05), (4, 1.0, 0.0)]:
        st = build([P(top_k=k, top_p=p, min_p=mp)], "cpu", len(z))
        mask = kept_mask(processed_logits(torch.tensor([z], dtype=torch.float64), st), st)[0]
        assert set(mask.nonzero().flatten().tolist()) == _hand_filter(z, k, p, mp)


@pytest.mark.parametrize("field,value,match", [
    ("temperature", -0.1, "temperature"), ("temperature", float("nan"), "temperature"),
    ("top_p", 0.0, "top_p"), ("top_p", 1.5, "top_p"), ("top_k", -1, "top_k"), ("top_k", 2.5, "top_k"),
    ("min_p", 1.5, "min_p"), ("min_p", -0.1, "min_p"), ("repetition_penalty", 0.0, "repetition_penalty"),
    ("logprobs", 21, "logprobs"), ("logit_bias", {99: 1.0}, "logit_bias"),
    ("logit_bias", {1: float("inf")}, "logit_bias"),
])
def test_invalid_parameters_raise(device, field, value, match):
    p = P()
    setattr(p, field, value)
    with pytest.raises(SamplingParamsError, match=match):
        build([P(), p], device, 10)


def test_invalid_token_lists_raise(device):
    with pytest.raises(SamplingParamsError, match="output_ids"):
        build([P(presence_penalty=1.0)], device, 10, outputs=[[3, 10]])
    with pytest.raises(SamplingParamsError, match="one entry per row"):
        SamplingTensors.build([P(), P()], [[]], [[], []], [1, 2], 10, device)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_invalid_logits_raise_naming_the_row(device, bad):
    logits = torch.randn(3, 16, device=device)
    logits[2, 5] = bad
    st = build([P(temperature=0.0), P(), P(top_k=2)], device, 16)
    with pytest.raises(ValueError, match=r"rows \[2\]"):
        sample(logits, st)
    with pytest.raises(ValueError, match=r"rows \[2\]"):
        sample_reference(logits, st)


def test_row_without_finite_logits_raises(device):
    logits = torch.randn(2, 16, device=device)
    logits[0] = float("-inf")
    with pytest.raises(ValueError, match=r"rows \[0\]"):
        sample(logits, build([P(), P()], device, 16))


def test_shape_and_type_errors(device):
    st = build([P(), P()], device, 16)
    with pytest.raises(ValueError, match="built for 2 rows of vocab 16"):
        sample(torch.randn(2, 17, device=device), st)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        sample(torch.ones(2, 16, dtype=torch.int32, device=device), st)
    with pytest.raises(TypeError, match="SamplingTensors"):
        sample(torch.randn(2, 16, device=device), {"temperature": 1.0})


@pytest.mark.parametrize("config", range(len(CONFIGS["cuda"])))
def test_every_config_draws_the_reference_tokens(device, config):
    # Each config's block and pivot counts change the kernel's loops; all must give the same draws.
    g = torch.Generator(device=device).manual_seed(6)
    V = 700
    logits = 2.0 * torch.randn(5, V, generator=g, device=device)
    params = [P(temperature=0.7, top_k=40, top_p=0.8, repetition_penalty=1.2, frequency_penalty=0.5),
              P(temperature=1.3, min_p=0.05, logprobs=5), P(temperature=0.0, logprobs=3),
              P(temperature=1.0, top_p=0.3, logit_bias={5: 4.0}),
              P(temperature=0.9, top_k=300, top_p=0.9)]  # top-k above the candidate buffer: full-row top-p
    st = build(params, device, V, prompts=[[1, 2, 699]] * 5, outputs=[[3, 3, 600]] * 5, seeds=[9, 8, 7, 6, 5])
    out = launch(logits, st, config=CONFIGS["cuda"][config])
    ref = sample_reference(logits.double(), st)
    assert out.token_ids.tolist() == ref.token_ids.tolist()
    assert out.top_ids.tolist() == ref.top_ids.tolist()
    torch.testing.assert_close(out.logprobs, ref.logprobs, rtol=1e-5, atol=1e-5)


def test_ties_overflowing_the_candidate_buffer_keep_the_whole_tie(device):
    # 300 tokens tied at the top: top-k 2 keeps all of them (ties at a threshold are kept), more than the
    # candidate buffer holds, so top-p runs over the full row; draws must stay inside the tie.
    V = 1000
    logits = torch.randn(6, V, device=device, generator=torch.Generator(device=device).manual_seed(8)) - 10.0
    logits[:, 100:400] = 5.0
    st = build([P(temperature=1.0, top_k=2, top_p=0.5)] * 6, device, V, seeds=[3 * i for i in range(6)])
    out = sample(logits, st)
    assert ((out.token_ids >= 100) & (out.token_ids < 400)).all()
    assert out.token_ids.tolist() == sample_reference(logits.double(), st).token_ids.tolist()
    assert len(set(out.token_ids.tolist())) > 1


@pytest.mark.gpu
@pytest.mark.parametrize("index", range(12))
def test_benchmark_cases_pass_the_op_check(device, index):
    # The shapes the sweep times (real vocabularies, batch up to 256) must also be right.
    op = registry.get("sample")
    run_case(op, op.bench_cases()[index], device, seed=index)
