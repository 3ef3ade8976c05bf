"""The split sampling path (kernels/_sampling_split.py) against the torch reference and the row-wise kernel.

Which batches it takes, then: greedy and unfiltered rows, top-k rows with min-p, top-p and penalties,
ties across chunk edges, masked vocabularies (chunks with fewer than k tokens), and both fallbacks to the
whole row (a tie wider than a chunk's candidate buffer; more gathered candidates than a row's buffer). In
the interpreter a chunk is 64 tokens with room for 16 candidates and a row gathers at most 128, so small
vocabularies reach every path. Expected tokens come from ``sample_reference`` (plain torch, which
computes the same noise) and from the row-wise kernel, never from the split path itself.
"""

from __future__ import annotations

import pytest
import torch

from kernels import registry
from kernels._sampling_params import RequestParams as P
from kernels._sampling_split import config, handles
from kernels.sampling import SamplingTensors, sample, sample_reference, sample_rowwise

pytestmark = pytest.mark.sample


def build(params, device, vocab, prompts=None, outputs=None, seeds=None):
    B = len(params)
    return SamplingTensors.build(params, prompts or [[]] * B, outputs or [[]] * B,
                                 seeds if seeds is not None else [5 * i + 1 for i in range(B)], vocab, device)


def assert_same_draws(logits, st):
    """Split path (``sample`` on a batch it handles) == reference == row-wise kernel, tokens and logprobs."""
    assert handles(st), "this batch should take the split path"
    got = sample(logits, st)
    ref = sample_reference(logits.double(), st)
    rowwise = sample_rowwise(logits, st)
    assert got.token_ids.tolist() == ref.token_ids.tolist() == rowwise.token_ids.tolist() == got.host_token_ids
    torch.testing.assert_close(got.logprobs.double(), ref.logprobs.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.logprobs, rowwise.logprobs, rtol=1e-5, atol=1e-5)  # sums in another order
    return got


@pytest.mark.parametrize("params,expected", [
    ([P(temperature=0.0)], True),
    ([P(temperature=1.0), P(temperature=0.7, top_k=5, top_p=0.9, min_p=0.1, repetition_penalty=1.2)], True),
    ([P(temperature=0.7, top_p=0.9)], False),                 # top-p without top-k: the whole row
    ([P(temperature=0.7, min_p=0.1)], False),                 # min-p without top-k
    ([P(temperature=0.0, top_p=0.5)], True),                  # greedy rows ignore their filters
    ([P(temperature=0.7, top_k=10_000)], False),              # more than a chunk's candidates
    ([P(temperature=0.0, logprobs=3)], False),                # top logprobs: the row-wise kernel
    ([P(temperature=0.0, logprobs=0)], True),                 # the chosen token's logprob only
], ids=["greedy", "top-k", "top-p-only", "min-p-only", "greedy-filters", "large-k", "top-logprobs", "lp0"])
def test_which_batches_take_the_split_path(device, params, expected):
    assert handles(build(params, device, 20_000)) is expected


def test_batches_above_max_rows_take_the_rowwise_kernel(device, monkeypatch):
    from kernels import _sampling_split

    monkeypatch.setitem(_sampling_split.config(), "MAX_ROWS", 2)
    assert handles(build([P(temperature=0.0)] * 2, device, 100))
    assert not handles(build([P(temperature=0.0)] * 3, device, 100))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("vocab", [1, 63, 64, 65, 300])
def test_greedy_and_unfiltered_rows(device, dtype, vocab):
    g = torch.Generator(device=device).manual_seed(vocab)
    logits = (4 * torch.randn(4, vocab, generator=g, device=device)).to(dtype)
    st = build([P(temperature=0.0), P(temperature=1.0), P(temperature=0.0), P(temperature=0.6)], device, vocab)
    out = assert_same_draws(logits, st)
    want = logits.float().argmax(1)
    assert out.token_ids[0] == want[0] and out.token_ids[2] == want[2]


@pytest.mark.parametrize("seed", range(4))
def test_filtered_rows_with_penalties_match_the_reference(device, seed):
    g = torch.Generator(device=device).manual_seed(seed)
    V = 64 * 7 + 5  # 8 chunks, the last partial
    logits = 3 * torch.randn(8, V, generator=g, device=device)
    params = [P(temperature=0.7, top_k=k, top_p=p, min_p=mp, repetition_penalty=r, frequency_penalty=f,
                logit_bias={7: 4.0} if b else None)
              for k, p, mp, r, f, b in [(1, 1.0, 0.0, 1.0, 0.0, 0), (5, 0.9, 0.0, 1.3, 0.5, 1),
                                        (16, 0.5, 0.05, 1.0, 0.0, 0), (3, 1.0, 0.2, 1.1, 0.0, 1),
                                        (16, 0.99, 0.0, 1.0, 1.0, 0), (8, 0.3, 0.0, 1.0, 0.0, 0),
                                        (2, 1.0, 0.0, 1.0, 0.0, 0), (12, 0.8, 0.01, 1.5, 0.2, 1)]]
    prompts = [[1, 2, 3, 63, 70, 200 + seed]] * 8         # 63, 127, 128: the edges of chunks 0 and 1
    outputs = [[4, 4, 9, V - 1, 127, 128, 130]] * 8
    assert_same_draws(logits, build(params, device, V, prompts, outputs))


def test_mixed_greedy_unfiltered_and_filtered_rows(device):
    g = torch.Generator(device=device).manual_seed(11)
    V = 500
    logits = 2 * torch.randn(6, V, generator=g, device=device)
    params = [P(temperature=0.0), P(temperature=0.9, top_k=10, top_p=0.8), P(temperature=1.3),
              P(temperature=0.0, repetition_penalty=1.4), P(temperature=0.5, top_k=4, min_p=0.3),
              P(temperature=1.0, presence_penalty=1.0)]
    assert_same_draws(logits, build(params, device, V, [[3, 4]] * 6, [[5, 5, 6]] * 6))


def test_ties_across_chunks_go_to_the_lowest_index(device):
    c = config()["CHUNK"]
    V = 3 * c + 7
    logits = torch.randn(3, V, device=device, generator=torch.Generator(device=device).manual_seed(2))
    logits[0, [c + 5, 2 * c + 1]] = 30.0            # in chunks 1 and 2: the first wins
    logits[1, [2 * c + 6, 5, c]] = 30.0             # three chunks: index 5
    logits[2, :] = float("-inf")
    logits[2, V - 1] = 1.0                          # the last token of a partial chunk
    out = assert_same_draws(logits, build([P(temperature=0.0)] * 3, device, V))
    assert out.token_ids.tolist() == [c + 5, 5, V - 1]


def test_masked_vocabulary_with_chunks_holding_fewer_than_k_tokens(device):
    # Structured-output style: a few allowed tokens per chunk, fewer than k, so no chunk bounds v_k and
    # every finite token is gathered.
    c = config()["CHUNK"]
    V = 6 * c
    g = torch.Generator(device=device).manual_seed(5)
    logits = torch.full((4, V), float("-inf"), device=device)
    allowed = torch.arange(3, V, c // 4 + 1, device=device)
    logits[:, allowed] = torch.randn(4, allowed.numel(), generator=g, device=device)
    params = [P(temperature=1.0, top_k=10, top_p=0.9), P(temperature=0.8, top_k=3),
              P(temperature=1.2, top_k=16, min_p=0.2), P(temperature=0.0, top_k=5)]
    out = assert_same_draws(logits, build(params, device, V, seeds=[9, 8, 7, 6]))
    assert torch.isin(out.token_ids, allowed).all()


def test_a_tie_wider_than_a_chunks_candidates_finishes_on_the_whole_row(device):
    cfg = config()
    V = 4 * cfg["CHUNK"]
    g = torch.Generator(device=device).manual_seed(8)
    logits = torch.randn(5, V, generator=g, device=device) - 10.0
    tie = slice(cfg["CHUNK"] + 1, cfg["CHUNK"] + 1 + 2 * cfg["CAND_CHUNK"])  # more than one chunk can hold
    logits[:, tie] = 5.0
    st = build([P(temperature=1.0, top_k=2, top_p=0.5)] * 5, device, V, seeds=[3 * i for i in range(5)])
    out = assert_same_draws(logits, st)
    assert ((out.token_ids >= tie.start) & (out.token_ids < tie.stop)).all()
    assert len(set(out.token_ids.tolist())) > 1


def test_more_candidates_than_a_row_holds_finish_on_the_whole_row(device):
    # Every chunk is the same pattern, so every chunk's k-th value is the bound L and every chunk passes
    # its k candidates on: chunks x k > CAND_ROW.
    cfg = config()
    chunks = cfg["CAND_ROW"] // cfg["CAND_CHUNK"] + 2
    g = torch.Generator(device=device).manual_seed(6)
    pattern = torch.randn(2, cfg["CHUNK"], generator=g, device=device)
    logits = pattern.repeat(1, chunks)
    st = build([P(temperature=1.0, top_k=cfg["CAND_CHUNK"]), P(temperature=0.9, top_k=cfg["CAND_CHUNK"] // 2,
                                                             top_p=0.7)], device, logits.shape[1])
    assert_same_draws(logits, st)


def test_invalid_rows_raise_naming_them(device):
    logits = torch.randn(4, 200, device=device)
    logits[1, 150] = float("nan")
    logits[3, :] = float("-inf")
    params = [P(temperature=0.0), P(temperature=1.0, top_k=4), P(temperature=1.0), P(temperature=0.5, top_k=2)]
    with pytest.raises(ValueError, match=r"rows \[1, 3\] hold NaN"):
        sample(logits, build(params, device, 200))
    logits[2, 7] = float("inf")
    with pytest.raises(ValueError, match=r"rows \[1, 2, 3\]"):
        sample(logits, build(params, device, 200))


def test_rowwise_is_registered_as_a_variant_of_sample():
    op = registry.get("sample")
    assert op.impls["sample_rowwise"] is sample_rowwise and op.impl_backends["sample_rowwise"] == "triton"


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 64, 128])
def test_model_vocabularies_on_the_gpu(device, batch):
    """The benchmark's settings (top-k 50, top-p 0.9, T 0.7, penalties) and greedy rows, at real vocabularies."""
    for vocab in (151936, 128256):
        g = torch.Generator(device=device).manual_seed(batch)
        logits = 3 * torch.randn(batch, vocab, generator=g, device=device)
        params = [P(temperature=0.0) if i % 3 == 2 else
                  P(temperature=0.7, top_k=50, top_p=0.9, repetition_penalty=1.1, frequency_penalty=0.2)
                  for i in range(batch)]
        outputs = [[(97 * i + j) % vocab for j in range(40)] for i in range(batch)]
        assert_same_draws(logits, build(params, device, vocab, [[1, 2, 3]] * batch, outputs))
        greedy = build([P(temperature=0.0)] * batch, device, vocab)
        assert sample(logits.bfloat16(), greedy).token_ids.tolist() == logits.bfloat16().float().argmax(1).tolist()
