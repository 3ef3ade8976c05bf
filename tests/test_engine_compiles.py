"""A warm engine compiles nothing new when token counts, batch sizes and context lengths change (GPU only).

Triton compiles a kernel once per specialization of its integer arguments: a value of 1, or a multiple of
16, gets its own binary unless the argument is listed in ``do_not_specialize``. An argument that changes
from step to step (a token count, a batch size, a block-table width) would otherwise compile a new variant
in the middle of serving, stalling every request in flight for seconds. This test runs one workload that
meets every path (prefill with and without a cached prefix, mixed prefill/decode steps, graph-replayed
and eager decode, the sampler's variants), then a second with other lengths, and requires that the second
compiles no kernel at all.
"""

from __future__ import annotations

import pytest
import torch

from engine.sampling_params import SamplingParams
from tests.engine_helpers import make_engine
from tests.model_factory import make_hf_model

pytestmark = [pytest.mark.gpu, pytest.mark.engine]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("compiles"), arch="qwen2", tie_word_embeddings=True)


def _params(i: int, max_tokens: int) -> SamplingParams:
    """Greedy, sampled, penalised and logprob rows, in turn."""
    kinds = [dict(temperature=0.0), dict(temperature=0.8, top_p=0.9, seed=i),
             dict(temperature=0.7, repetition_penalty=1.2, seed=i), dict(temperature=0.0, logprobs=2)]
    return SamplingParams(max_tokens=max_tokens, ignore_eos=True, **kinds[i % len(kinds)])


def _run_staggered(engine, prompts: list[list[int]], max_tokens: int) -> int:
    """Submit the prompts two at a time, a few steps apart (so that prefills meet running decodes); then
    resubmit the first prompt extended (a prefix-cache hit). Returns the tokens generated."""
    done = 0
    pending = [*prompts, prompts[0] + [7, 7, 7]]
    i = 0
    while pending or engine.has_unfinished():
        if pending and (engine.num_steps % 3 == 0 or not engine.has_unfinished()):
            for prompt in pending[:2]:
                engine.add_request(prompt, _params(i, max_tokens))
                i += 1
            pending = pending[2:]
        for out in engine.step():
            done += len(out.new_token_ids)
            assert out.finish_reason in (None, "length"), out
    engine.scheduler.check_invariants()
    return done


def test_second_workload_compiles_no_kernel(model_dir, monkeypatch):
    import triton

    knobs = getattr(triton, "knobs", None)
    if knobs is None or not hasattr(knobs.runtime, "jit_cache_hook"):
        pytest.skip("this triton has no knobs.runtime.jit_cache_hook (triton >= 3.4 has)")
    engine = make_engine(model_dir, "triton", dtype=torch.bfloat16)
    vocab = engine.model_config.vocab_size
    gen = torch.Generator().manual_seed(0)

    def prompts(lengths):
        return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lengths]

    # First: lengths of 1, multiples of 16 and others, long enough for split decode and two-block prefixes.
    assert _run_staggered(engine, prompts([45, 16, 1, 96, 160, 33, 200, 2]), max_tokens=40) > 0

    compiled: list[str] = []

    def record(*args, **kwargs):
        fn = kwargs.get("fn")
        compiled.append(getattr(fn, "name", None) or repr(kwargs.get("repr", fn)))
        return False  # compile as usual

    monkeypatch.setattr(knobs.runtime, "jit_cache_hook", record)
    assert _run_staggered(engine, prompts([48, 7, 1, 130, 5, 99, 64, 17]), max_tokens=37) > 0
    torch.cuda.synchronize()
    assert not compiled, (f"kernels compiled again for new lengths: {sorted(set(compiled))}; list the "
                          "argument that changed in the kernel's do_not_specialize")
