"""The offline API (``LLM.generate``), the ``generate`` command and the ``demo`` command, end to end."""

from __future__ import annotations

import re

import pytest

from engine.sampling_params import SamplingParams
from tests.engine_helpers import (
    hf_greedy,
    prompt_batch,
    single_threaded,  # noqa: F401  (autouse fixture: one CPU thread)
)
from tests.model_factory import load_hf_model, make_hf_model

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("llm"), arch="qwen2", tie_word_embeddings=True)


@pytest.fixture(scope="module")
def llm(model_dir):
    from engine.llm import LLM

    return LLM(str(model_dir), backend="torch", device="cpu")


def test_generate_text_prompts_in_order(llm, model_dir):
    prompts = ["The quick brown fox", "Hello, world!", "Paged attention"]
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    hf = load_hf_model(model_dir)
    for prompt, out in zip(prompts, outs, strict=True):
        ids = llm.tokenizer.encode(prompt)
        assert out.prompt_token_ids == ids
        assert out.token_ids == hf_greedy(hf, ids, 8)
        assert out.text == llm.tokenizer.decode(out.token_ids)
        assert out.finish_reason == "length"


def test_generate_params_per_prompt_and_n(llm):
    prompts = prompt_batch(300, 2, seed=4)
    outs = llm.generate(prompts, [SamplingParams(temperature=0, max_tokens=3),
                                  SamplingParams(temperature=1.0, seed=3, n=3, max_tokens=5, ignore_eos=True)])
    assert len(outs[0].token_ids) <= 3
    assert isinstance(outs[1], list) and len(outs[1]) == 3
    assert all(len(o.token_ids) == 5 for o in outs[1])
    again = llm.generate([prompts[1]], SamplingParams(temperature=1.0, seed=4, max_tokens=5, ignore_eos=True))
    assert again[0].token_ids == outs[1][1].token_ids  # copy i of a seeded request uses seed + i


def test_generate_rejects_mismatched_params(llm):
    with pytest.raises(ValueError, match="one each"):
        llm.generate(["a", "b"], [SamplingParams()])


def test_generate_command_streams(model_dir, capsys):
    from engine.cli import main

    code = main(["generate", "--model", str(model_dir), "--max-tokens", "5", "--temperature", "0", "--ignore-eos",
                 "Hello"])
    out = capsys.readouterr()
    assert code == 0
    assert "5 tokens" in out.err and out.out.strip()


def test_generate_command_reports_bad_model(tmp_path, capsys):
    from engine.cli import main

    code = main(["generate", "--model", str(tmp_path / "missing"), "Hello"])
    assert code == 1
    assert "missing" in capsys.readouterr().err


def test_demo_command_runs(capsys):
    from engine.cli import main

    assert main(["demo", "--max-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "greedy" in out and "prefix cache" in out and "tok/s" in out
    # The demo model was fitted to its text by a plain-torch forward (engine/demo_training.py); the engine
    # continuing a prompt from that text with the text shows both compute the same function.
    assert "jumps over the lazy dog" in out
    # The sampled section must not just repeat the greedy text (the demo model is very peaked).
    sections = {part.split(":", 1)[0].split(" ", 1)[0]: part.splitlines()[1:] for part in out.split("== ")[1:]}
    greedy = next(line for line in sections["greedy"] if line.startswith("  'Once upon a time' -> "))
    sampled = [line for line in sections["sampled"] if line.strip()]
    assert [line.split(" -> ")[0] for line in sampled] == [f"  'Once upon a time' (copy {k})" for k in range(4)]
    texts = [" -> " + line.split(" -> ", 1)[1].removesuffix("  (same as greedy)") for line in sampled]
    greedy = " -> " + greedy.split(" -> ", 1)[1]
    assert len(set(texts)) > 1 and greedy not in texts
    assert not any(line.endswith("(same as greedy)") for line in sampled)


def test_generate_command_batch_and_chat(model_dir, capsys):
    from engine.cli import main

    code = main(["generate", "--model", str(model_dir), "--max-tokens", "4", "--temperature", "0", "--chat",
                 "--system", "Be brief.", "Hello", "What is paged attention?"])
    out = capsys.readouterr()
    assert code == 0
    assert "--- [0] 'Hello'" in out.out and "--- [1] 'What is paged attention?'" in out.out
    assert "2/2 done" in out.err


def test_generate_command_rejects_bad_op_flag(model_dir, capsys):
    from engine.cli import main

    assert main(["generate", "--model", str(model_dir), "--op", "rmsnorm", "Hello"]) == 1
    assert "NAME=IMPL" in capsys.readouterr().err


def _generate_cli(capsys, *argv):
    from engine.cli import main

    code = main(["generate", *argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def _sections(stdout: str) -> list[str]:
    """The completions the batch path prints: the text after each ``--- [i] ...`` header line."""
    return [part.split("\n", 1)[1].rstrip("\n") for part in stdout.split("--- [")[1:]]


def test_generate_command_n_completions_follow_the_seeds(llm, model_dir, capsys):
    out = _generate_cli(capsys, "--model", str(model_dir), "--max-tokens", "6", "--temperature", "1", "--top-p", "1",
                        "--ignore-eos", "--n", "3", "--seed", "5", "Hello")
    assert [line for line in out.splitlines() if line.startswith("---")] == [
        f"--- [0] 'Hello', completion {k}/3 (finish: length)" for k in (1, 2, 3)]
    expected = llm.generate("Hello", SamplingParams(temperature=1.0, seed=5, n=3, max_tokens=6, ignore_eos=True))[0]
    assert _sections(out) == [o.text for o in expected]
    assert len({o.text for o in expected}) > 1, "seeds 5, 6, 7 should not all sample the same text"


def test_generate_command_prints_logprobs(llm, model_dir, capsys):
    out = _generate_cli(capsys, "--model", str(model_dir), "--max-tokens", "4", "--temperature", "0",
                        "--ignore-eos", "--logprobs", "2", "Hello")
    expected = llm.generate("Hello", SamplingParams(temperature=0, max_tokens=4, ignore_eos=True, logprobs=2))[0]
    lines = out.split("logprobs:\n", 1)[1].splitlines()
    assert len(lines) == 4
    for line, lp in zip(lines, expected.logprobs, strict=True):
        show = f"{llm.tokenizer.decode([lp.token_id], skip_special_tokens=False)!r} ({lp.token_id})"
        assert line.startswith(f"  {show} {lp.logprob:.4f}   top: ")
        assert line.count(" (") == 3  # the chosen token and its two alternatives
        assert f"({lp.top[1][0]}) {lp.top[1][1]:.4f}" in line


def test_generate_command_logit_bias_forces_tokens(llm, model_dir, capsys):
    forced = llm.tokenizer.encode("fox")[-1]
    out = _generate_cli(capsys, "--model", str(model_dir), "--max-tokens", "3", "--temperature", "0",
                        "--ignore-eos", "--logit-bias", f"{forced}=100,5=-1", "--logprobs", "0", "Hello")
    lines = out.split("logprobs:\n", 1)[1].splitlines()
    assert [int(re.search(r" \((\d+)\) -?\d", line).group(1)) for line in lines] == [forced] * 3


def test_generate_command_penalties_reach_the_sampler(llm, model_dir, capsys):
    penalized = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, presence_penalty=2.0,
                               frequency_penalty=1.0)
    expected = llm.generate(["Hello", "Hello"], [penalized, SamplingParams(temperature=0, max_tokens=12,
                                                                           ignore_eos=True)])
    assert expected[0].text != expected[1].text, "the penalties should change this greedy continuation"
    out = _generate_cli(capsys, "--model", str(model_dir), "--max-tokens", "12", "--temperature", "0",
                        "--ignore-eos", "--presence-penalty", "2", "--frequency-penalty", "1", "Hello", "Hello")
    assert _sections(out) == [expected[0].text, expected[0].text]


@pytest.mark.parametrize(("argv", "message"), [
    (["--logit-bias", "12"], "TOKEN_ID=BIAS"),
    (["--logit-bias", "x=1"], "TOKEN_ID=BIAS"),
    (["--logit-bias", "12=200"], "logit_bias[12]"),
    (["--presence-penalty", "3"], "presence_penalty"),
    (["--n", "0"], "n must be"),
    (["--logprobs", "99"], "logprobs"),
])
def test_generate_command_rejects_bad_sampling_flags(model_dir, capsys, argv, message):
    from engine.cli import main

    assert main(["generate", "--model", str(model_dir), *argv, "Hello"]) == 1
    assert message in capsys.readouterr().err


def test_generate_url_refuses_local_only_flags(capsys):
    from engine.cli import main

    assert main(["generate", "--url", "http://127.0.0.1:9", "--n", "2", "--logit-bias", "1=1", "Hello"]) == 2
    assert "--n, --logit-bias work with --model only" in capsys.readouterr().err


def test_close_gives_the_memory_back_and_refuses_more_work(model_dir):
    """A closed engine holds no weights, cache or graphs, and says so when asked for more work."""
    import weakref

    from engine.llm import LLM

    llm = LLM(str(model_dir), backend="torch", device="cpu")
    runner = llm.engine.runner
    cache = weakref.ref(runner.kv_caches[0][0])
    model_tensor = weakref.ref(runner.model.cos_sin_cache)
    llm.engine.add_request([5, 6, 7], SamplingParams(temperature=0, max_tokens=4))
    llm.close()
    assert cache() is None and model_tensor() is None and runner.graphs is None
    assert not llm.engine.has_unfinished()
    with pytest.raises(RuntimeError, match="closed"):
        llm.generate(["again"], SamplingParams(max_tokens=2))
    with pytest.raises(RuntimeError, match="closed"):
        llm.engine.step()
    llm.close()  # a second close does nothing
