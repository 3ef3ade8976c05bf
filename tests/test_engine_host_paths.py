"""The engine step's fast host paths against values computed independently here.

- the single-token (steady decode) step batch: positions, slots, block tables and logits rows computed
  per row with the paging formula;
- the decode-graph input staging (run on the CPU with a stand-in for the captured graph): real rows
  carry the step's inputs, padded rows the harmless values, also after the batch shrinks;
- the stop-string matcher without stop strings, and the small-batch rng keys against the numpy path.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from engine.attention_metadata import build_step_batch
from engine.decode_graphs import DecodeGraphs
from engine.detokenizer import StopStringMatcher
from engine.sampling_params import SamplingParams
from engine.sequence import Sequence
from kernels._sampling_params import SMALL_BATCH, rng_keys
from tests.engine_helpers import use_cpu_decode_graphs

pytestmark = pytest.mark.engine

BS = 4  # block size


def _decode_seqs(rng: random.Random, n: int) -> list[Sequence]:
    seqs, free = [], list(range(1, 400))
    rng.shuffle(free)
    for i in range(n):
        seq = Sequence(f"r{i}", [rng.randrange(3, 1000) for _ in range(rng.randint(1, 13))], SamplingParams())
        for _ in range(rng.randint(0, 5)):
            seq.append_token(rng.randrange(3, 1000))
        # Mostly decodes (all but the last token cached); some one-token remainders of a longer prompt.
        seq.num_computed_tokens = seq.num_tokens - 1 - (rng.random() < 0.2 and seq.num_tokens > 2)
        seq.block_table = [free.pop() for _ in range(-(-(seq.num_computed_tokens + 1) // BS))]
        seqs.append(seq)
    return seqs


@pytest.mark.parametrize("seed", range(4))
def test_single_token_batch_follows_the_paging_formula(seed):
    rng = random.Random(seed)
    seqs = _decode_seqs(rng, rng.choice([1, 3, 9]))
    batch = build_step_batch(seqs, [1] * len(seqs), BS, torch.device("cpu"))
    meta = batch.meta
    width = max(len(s.block_table) for s in seqs)
    assert batch.num_decodes == meta.num_decode_tokens == len(seqs) and meta.num_prefills == 0
    for row, seq in enumerate(seqs):
        pos = seq.num_computed_tokens
        assert batch.token_ids[row].item() == seq.token_ids[pos]
        assert batch.positions[row].item() == pos
        assert meta.slot_mapping[row].item() == seq.block_table[pos // BS] * BS + pos % BS
        assert meta.decode_context_lens[row].item() == pos + 1
        assert meta.decode_block_tables[row].tolist() == seq.block_table + [0] * (width - len(seq.block_table))
    expected_rows = [row for row, s in enumerate(seqs) if s.num_computed_tokens + 1 == s.num_tokens]
    assert batch.sampled_seqs == expected_rows and batch.logits_rows.tolist() == expected_rows
    assert meta.prefill_cu_seqlens.tolist() == [0] and meta.max_decode_context_len == max(
        s.num_computed_tokens + 1 for s in seqs)
    assert torch.equal(batch.inputs, torch.stack([batch.token_ids, batch.positions, meta.slot_mapping]))


class _Runner:
    device = torch.device("cpu")
    block_size = BS
    max_model_len = 64
    scratch_block = 999


class _Snapshot:
    """Stands in for a captured graph: replay records what the static buffers hold."""

    def __init__(self, graphs, bs):
        self.graphs, self.bs, self.seen = graphs, bs, []

    def replay(self):
        g = self.graphs
        self.seen.append((g.token_ids[:self.bs].tolist(), g.positions[:self.bs].tolist(), g.slots[:self.bs].tolist(),
                          g.tables[:self.bs].tolist(), g.context_lens[:self.bs].tolist()))


def _graphs_on_cpu(max_batch: int) -> DecodeGraphs:
    DecodeGraphs._capture_all, capture = (lambda self: None), DecodeGraphs._capture_all
    try:
        graphs = DecodeGraphs(_Runner(), max_batch)
    finally:
        DecodeGraphs._capture_all = capture
    for bs in graphs.sizes:
        graphs.graphs[bs] = _Snapshot(graphs, bs)
        graphs.logits[bs] = torch.arange(bs * 3.0).view(bs, 3)
        graphs.greedy_tokens[bs] = torch.full((bs,), 2)
    return graphs


def test_graph_inputs_are_staged_and_padded_rows_reset_when_the_batch_shrinks():
    rng = random.Random(7)
    graphs = _graphs_on_cpu(8)
    for n in (7, 8, 3, 3, 5):  # grows, shrinks (padding must come back), stays, grows within a size
        seqs = _decode_seqs(rng, n)
        batch = build_step_batch(seqs, [1] * n, BS, torch.device("cpu"))
        assert graphs.fits(batch)
        bs = min(s for s in graphs.sizes if s >= n)
        logits, greedy_tokens = graphs.run(batch)
        assert logits.shape[0] == n and greedy_tokens.shape[0] == n
        tokens, positions, slots, tables, lens = graphs.graphs[bs].seen[-1]
        for row, seq in enumerate(seqs):
            pos = seq.num_computed_tokens
            assert (tokens[row], positions[row]) == (seq.token_ids[pos], pos)
            assert slots[row] == seq.block_table[pos // BS] * BS + pos % BS
            assert tables[row][:len(seq.block_table)] == seq.block_table and lens[row] == pos + 1
        for row in range(n, bs):
            assert slots[row] == -1 and lens[row] == 1 and set(tables[row]) == {_Runner.scratch_block}


def test_stop_matcher_without_stops_passes_text_through():
    matcher = StopStringMatcher([])
    pieces = ["Hel", "lo", "", " wor", "ld\ufffd"]
    assert [matcher.push(p) for p in pieces] == [(p, False) for p in pieces]
    assert matcher.flush() == "" and matcher.stopped is None


def test_small_batch_rng_keys_match_the_vectorised_ones():
    rng = random.Random(3)
    seeds = [rng.getrandbits(63) for _ in range(40)] + [0, 2**64 - 1, 2**70 + 5, -3]
    steps = [rng.randrange(10**6) for _ in seeds]
    assert len(seeds) > SMALL_BATCH
    whole = rng_keys(seeds, steps)
    for i in range(len(seeds)):
        one = rng_keys([seeds[i]], [steps[i]])
        assert (one[0][0], one[1][0]) == (whole[0][i], whole[1][i]), f"row {i}"
    assert whole[0].dtype == np.int32 and len(set(whole[0].tolist())) == len(seeds)


def test_sample_hands_back_the_tokens_it_read(device):
    from kernels._sampling_params import RequestParams, SamplingTensors
    from kernels.sampling import sample

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=gen).to(device)
    params = [RequestParams(temperature=0.0), RequestParams(temperature=0.9), RequestParams(top_k=5, top_p=0.8)]
    result = sample(logits, SamplingTensors.build(params, [[1]] * 3, [[]] * 3, [1, 2, 3], 50, device))
    assert result.host_token_ids == result.token_ids.tolist()
    assert result.host_token_ids[0] == int(logits[0].argmax())


def test_incremental_detokenizer_over_a_long_output_equals_the_full_decode(tmp_path):
    from engine.detokenizer import IncrementalDetokenizer
    from engine.tokenizer import Tokenizer
    from tests.model_factory import make_tokenizer

    tok = Tokenizer.from_dir(make_tokenizer(tmp_path))
    text = ("Émile a mangé une crème brûlée à Zürich. 東京 日本語 한국어 😀 🚀 text after emoji\n"
            "  leading spaces and\nnew lines, then plain words going on for a while. ") * 3
    output = tok.encode(text, add_special_tokens=False)
    assert len(output) > 100
    for prompt in ([], tok.encode("Question: ")):
        detok = IncrementalDetokenizer(tok, prompt)
        pieces = [detok.push(i) for i in output]
        assert "".join(pieces) == tok.decode(output) == text
        assert all("\ufffd" not in p for p in pieces)


def test_single_stream_decode_steps_take_the_graph_path(tmp_path):
    from engine.config import EngineConfig
    from engine.demo_model import build_demo_model
    from engine.llm_engine import LLMEngine

    model = build_demo_model(tmp_path / "m", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                             intermediate_size=64, max_position=256)
    engine = LLMEngine(EngineConfig(model=str(model), device="cpu", max_num_seqs=4))
    prompt = list(range(5, 25))
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    eager = engine.add_request(prompt, params)
    eager_ids = []
    while engine.has_unfinished():
        eager_ids += [t for o in engine.step() if o.request_id == eager for t in o.new_token_ids]
    graphs = use_cpu_decode_graphs(engine, max_batch=4)
    request = engine.add_request(prompt, params)
    ids = []
    while engine.has_unfinished():
        ids += [t for o in engine.step() if o.request_id == request for t in o.new_token_ids]
    # The prefill runs eagerly; each of the 5 decode steps (batch 1) is served by the graph (replayed then
    # or run one step ahead).
    assert graphs.steps_served == 5
    assert ids == eager_ids and len(ids) == 6


def test_half_precision_logits_reach_the_sampler_uncast_and_prompt_logits_stay_float32(tmp_path):
    """The decode step hands the lm_head's bf16 logits to the argmax and the sampler as they are (a cast
    would be one more launch a step); prompt_logits, for scoring and parity checks, still returns float32."""
    from engine.config import EngineConfig
    from engine.demo_model import build_demo_model
    from engine.llm_engine import LLMEngine

    model = build_demo_model(tmp_path / "m", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                             intermediate_size=64, max_position=256)
    engine = LLMEngine(EngineConfig(model=str(model), device="cpu", dtype=torch.bfloat16, max_num_seqs=4))
    runner = engine.runner
    prompt = list(range(5, 25))
    scored = runner.prompt_logits([prompt])
    assert scored.dtype == torch.float32
    seen = []
    compute = runner.model.compute_logits
    runner.model.compute_logits = lambda hidden: seen.append(compute(hidden)) or seen[-1]
    request = engine.add_request(prompt, SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True))
    ids = [t for o in engine.step() if o.request_id == request for t in o.new_token_ids]
    assert [t.dtype for t in seen] == [torch.bfloat16]
    # The first token is the argmax of the same logits, read uncast or cast.
    assert ids == [int(seen[0].float().argmax())] == [int(scored.argmax())]
