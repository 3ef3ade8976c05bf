"""Registration data for the ``sample`` op: random cases, inputs, the custom check and benchmark cases.

A draw cannot be compared elementwise with another draw, so ``compare`` checks what must hold for any
correct sampler: greedy rows take an argmax of the reference's processed logits; every sampled token lies
in the set the reference's filters keep (widened by float32 rounding); the chosen token's logprob and the
top logprobs match the reference's within the tolerance policy. (The reference uses the kernel's noise,
so the tokens usually agree exactly; ``tests/test_sampling.py`` checks that separately.)
"""

from __future__ import annotations

import random

import torch

from kernels._sampling_params import RequestParams, SamplingTensors
from kernels._sampling_reference import kept_mask, processed_logits
from kernels.testing import assert_close, describe

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
MODEL_VOCABS = [151936, 128256]  # Qwen2.5 / Qwen3, Llama-3
ROUNDING_SLACK = 1e-4


def random_params(rng: random.Random, mode: str, vocab: int) -> RequestParams:
    """One request's parameters; ``mode`` is "greedy", "sampled", "penalties", "mixed" (any of them) or
    "bench-sampled" / "bench-greedy" (the benchmark's fixed settings)."""
    if mode.startswith("bench-"):
        return bench_params(mode)
    if mode == "mixed":
        mode = rng.choice(["greedy", "sampled", "sampled", "penalties"])
    p = RequestParams(logprobs=rng.choice([None, 0, 1, 3, 5]))
    if mode == "greedy":
        p.temperature = 0.0
    else:
        p.temperature = rng.choice([0.3, 0.7, 1.0, 1.5])
        p.top_k = rng.choice([0, 1, 2, 5, 40])
        p.top_p = rng.choice([1.0, 0.9, 0.5, 0.05])
        p.min_p = rng.choice([0.0, 0.0, 0.05, 0.3])
    if mode == "penalties" or rng.random() < 0.3:
        p.repetition_penalty = rng.choice([1.0, 1.3, 0.8])
        p.presence_penalty = rng.choice([0.0, 0.5, -0.4])
        p.frequency_penalty = rng.choice([0.0, 0.3, 1.0])
        if rng.random() < 0.5:
            p.logit_bias = {rng.randrange(vocab): rng.uniform(-5, 5) for _ in range(3)}
    return p


def _cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        batch, vocab = st.sampled_from([1, 3, 6]), st.sampled_from([1, 17, 64, 123, 300])
    else:
        batch, vocab = st.sampled_from([1, 7, 64]), st.sampled_from([*MODEL_VOCABS, 32000, 4113, 123])
    return st.fixed_dictionaries({
        "batch": batch, "vocab": vocab, "dtype": st.sampled_from(DTYPES),
        "mode": st.sampled_from(["mixed", "greedy", "sampled", "penalties"]),
    })


def _make_inputs(case, device, gen):
    B, V = case["batch"], case["vocab"]
    rng = random.Random(int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=device)))
    logits = 3.0 * torch.randn(B, V, generator=gen, device=device)
    if case.get("mask_some", True) and V > 4:
        logits[0, rng.randrange(V)] = -torch.inf  # masked tokens are valid and never drawn
    params = [random_params(rng, case["mode"], V) for _ in range(B)]
    prompt_len, out_len = case.get("prompt_len", 12), case.get("output_len", 8)
    prompts = [[rng.randrange(V) for _ in range(prompt_len)] for _ in range(B)]
    outputs = [[rng.randrange(V) for _ in range(rng.randint(0, out_len))] for _ in range(B)]
    seeds = [rng.randrange(2**63) for _ in range(B)]
    st = SamplingTensors.build(params, prompts, outputs, seeds, V, device)
    return {"logits": logits.to(case["dtype"]), "st": st}


def _compare(out, ref, kernel_inputs, ref_inputs, case):
    where = f"sample, case {describe(case)}"
    st = ref_inputs["st"]
    z = processed_logits(ref_inputs["logits"], st)
    B, V = z.shape
    tokens = out.token_ids
    if tokens.dtype != torch.int64 or tokens.shape != (B,):
        raise AssertionError(f"{where}: token_ids must be int64 [{B}], got {tokens.dtype} {tuple(tokens.shape)}")
    if bool(((tokens < 0) | (tokens >= V)).any()):
        raise AssertionError(f"{where}: token ids outside [0, {V}) (unwritten output?): {tokens.tolist()[:16]}")
    tok = tokens[:, None].to(z.device)
    greedy = st.temperature == 0
    zmax = z.max(-1).values
    argmax_ok = z.gather(1, tok)[:, 0] >= zmax - ROUNDING_SLACK * (1 + zmax.abs())
    allowed = kept_mask(z, st, slack=ROUNDING_SLACK).gather(1, tok)[:, 0]
    ok = torch.where(greedy, argmax_ok, allowed)
    if not bool(ok.all()):
        r = int((~ok).nonzero()[0])
        raise AssertionError(f"{where}: row {r} drew token {int(tokens[r])}, which the reference "
                             f"{'argmax' if greedy[r] else 'filters'} exclude (reference drew {int(ref.token_ids[r])})")
    logp = z - torch.logsumexp(z, -1, keepdim=True)
    assert_close(out.logprobs, logp.gather(1, tok)[:, 0], dtype=torch.float32, reduction_len=V,
                 what=f"{where}: chosen-token logprobs")
    if ref.top_ids is None:
        if out.top_ids is not None or out.top_logprobs is not None:
            raise AssertionError(f"{where}: no row asked for top logprobs, yet the kernel returned them")
        return
    if out.top_ids is None:
        raise AssertionError(f"{where}: top logprobs were requested but not returned")
    ids, lps = out.top_ids.to(z.device), out.top_logprobs.to(z.device)
    pad = ref.top_ids < 0
    if ids.shape != pad.shape or not torch.equal(ids < 0, pad) or not bool(torch.isneginf(lps[pad]).all()):
        raise AssertionError(f"{where}: top-logprob padding (-1 / -inf) differs from the requested widths")
    assert_close(lps[~pad], ref.top_logprobs[~pad], dtype=torch.float32, reduction_len=V,
                 what=f"{where}: top logprobs")
    assert_close(lps[~pad], logp.gather(1, ids.clamp(min=0))[~pad], dtype=torch.float32, reduction_len=V,
                 what=f"{where}: logprobs of the returned top ids")


def bench_params(mode: str) -> RequestParams:
    if mode == "bench-greedy":
        return RequestParams(temperature=0.0)
    return RequestParams(temperature=0.7, top_k=50, top_p=0.9, repetition_penalty=1.1,
                         presence_penalty=0.5, frequency_penalty=0.3)


def _bench_cases():
    return [
        {"batch": b, "vocab": v, "dtype": torch.float32, "mode": mode, "prompt_len": 256, "output_len": 128,
         "mask_some": False}
        for v in MODEL_VOCABS for mode in ("bench-sampled", "bench-greedy") for b in (1, 64, 256)
    ]


def op_fields() -> dict:
    return dict(
        cases=_cases,
        make_inputs=_make_inputs,
        bench_cases=_bench_cases,
        smoke_cases=lambda: [{"batch": 3, "vocab": 123, "dtype": dt, "mode": "mixed"} for dt in DTYPES],
        reduction_len=lambda c: c["vocab"],
        # A softmax-like pass: max, subtract, exp, sum per element; the kernel does a few such passes.
        flops=lambda c: 4.0 * c["batch"] * c["vocab"],
        bytes=lambda c: float(c["batch"] * c["vocab"] * c["dtype"].itemsize),
        compare=_compare,
    )
