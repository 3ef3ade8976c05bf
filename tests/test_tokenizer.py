"""Tokenizer, chat templates, incremental detokenization and stop strings.

References are independent: transformers' own fast tokenizer and its chat-template renderer, and a
full (non-incremental) decode of the whole output.
"""

from __future__ import annotations

import json

import pytest

from engine.detokenizer import IncrementalDetokenizer, StopStringMatcher
from engine.tokenizer import NoChatTemplateError, Tokenizer, TokenizerError
from tests.model_factory import IM_END, make_tokenizer

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Émile a mangé une crème brûlée à Zürich",
    "東京 日本語 한국어 😀 🚀 text after emoji",
    "  leading spaces and\nnew lines\n\n",
    "<|im_start|>user\nhi<|im_end|>",
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return Tokenizer.from_dir(tokenizer_dir)


@pytest.fixture(scope="module")
def hf_tok(tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_match_transformers(tok, hf_tok, text):
    ids = tok.encode(text)
    assert ids == hf_tok(text)["input_ids"]
    assert tok.decode(ids) == hf_tok.decode(ids, skip_special_tokens=True)
    assert tok.decode(ids, skip_special_tokens=False) == hf_tok.decode(ids, skip_special_tokens=False)


def test_special_tokens_and_ids(tok):
    assert tok.bos_token_id == 0 and tok.eos_token_ids == [1]
    assert tok.vocab_size == 384
    assert tok.encode(IM_END, add_special_tokens=False) == [3]  # a special token is one id, never split
    assert tok.is_special(3) and not tok.is_special(tok.encode("the", add_special_tokens=False)[0])


def test_add_bos_token(tmp_path):
    llama_style = Tokenizer.from_dir(make_tokenizer(tmp_path, add_bos_token=True))
    assert llama_style.encode("hi")[0] == 0
    assert llama_style.encode("hi", add_special_tokens=False)[0] != 0


def test_bos_added_from_config_when_tokenizer_json_does_not(tmp_path):
    directory = make_tokenizer(tmp_path)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config["add_bos_token"] = True
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    ids = Tokenizer.from_dir(directory).encode("hi")
    assert ids[0] == 0 and ids.count(0) == 1


def test_chat_template_matches_transformers(tok, hf_tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 😀"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    for add in (True, False):
        expected = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add)
        assert tok.apply_chat_template(messages, add_generation_prompt=add) == expected


def test_chat_template_from_jinja_file(tmp_path):
    directory = make_tokenizer(tmp_path, chat_template=None)
    (directory / "chat_template.jinja").write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    assert Tokenizer.from_dir(directory).apply_chat_template([{"role": "user", "content": "x"}]) == "[x]"


def test_no_chat_template_is_a_clear_error(tmp_path):
    plain = Tokenizer.from_dir(make_tokenizer(tmp_path, chat_template=None))
    with pytest.raises(NoChatTemplateError, match="no chat template"):
        plain.apply_chat_template([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("template", [
    "{{ messages.__class__.__mro__ }}",                      # reaching Python internals
    "{{ messages.append({'role': 'x'}) }}",                  # mutating the input
    "{{ raise_exception('only user messages') }}",
])
def test_chat_template_runs_sandboxed(tmp_path, template):
    tok = Tokenizer.from_dir(make_tokenizer(tmp_path, chat_template=template))
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(TokenizerError):
        tok.apply_chat_template(messages)
    assert messages == [{"role": "user", "content": "hi"}]


def test_missing_tokenizer_file(tmp_path):
    with pytest.raises(TokenizerError, match=r"tokenizer\.json"):
        Tokenizer.from_dir(tmp_path)


def test_corrupt_tokenizer_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot parse"):
        Tokenizer.from_dir(tmp_path)


@pytest.mark.parametrize("text", [*TEXTS[2:4], "a😀b", "😀😀😀"])
def test_incremental_detokenizer_equals_full_decode(tok, text):
    prompt = tok.encode("Question: ")
    output = tok.encode(text, add_special_tokens=False)
    # Multi-byte characters must really be split across tokens for this test to mean anything.
    assert any("\ufffd" in tok.decode([i]) for i in output) or text.isascii()
    detok = IncrementalDetokenizer(tok, prompt)
    pieces = [detok.push(i) for i in output]
    assert "".join(pieces) == tok.decode(output) == text
    assert all("\ufffd" not in p for p in pieces)


def test_incremental_detokenizer_skips_special_tokens(tok):
    detok = IncrementalDetokenizer(tok, [])
    out = "".join(detok.push(i) for i in [*tok.encode("hi there", add_special_tokens=False), 1])
    assert out == "hi there"


def _feed(matcher, pieces):
    emitted, stopped = [], False
    for piece in pieces:
        text, stopped = matcher.push(piece)
        emitted.append(text)
        if stopped:
            break
    return "".join(emitted), stopped


def test_stop_string_across_pieces_is_cut_and_never_emitted():
    matcher = StopStringMatcher(["STOP"])
    text, stopped = _feed(matcher, ["abc S", "T", "O", "P tail"])
    assert (text, stopped, matcher.stopped) == ("abc ", True, "STOP")


def test_earliest_stop_string_wins():
    text, stopped = _feed(StopStringMatcher(["world", "lo"]), ["hello world"])
    assert (text, stopped) == ("hel", True)


def test_held_back_prefix_is_released():
    matcher = StopStringMatcher(["STOP"])
    assert matcher.push("abc ST") == ("abc ", False)
    assert matcher.push("ory") == ("STory", False)
    assert matcher.push(" S") == (" ", False)
    assert matcher.flush() == "S"


def test_no_stop_strings_passes_everything():
    matcher = StopStringMatcher([])
    assert matcher.push("anything") == ("anything", False)
    assert matcher.flush() == ""


# The constructs real templates (Qwen, Llama 3) rely on: namespace, loop controls, slicing, tojson, strftime.
RICH_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for m in messages[::-1] -%}{%- if m['role'] == 'system' -%}{%- continue -%}{%- endif -%}"
    "[{{ m['role'] | upper }}:{{ m['content'] | trim }}]{%- if loop.index0 == 0 %} last={{ ns.last_user }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if tools %} tools={{ tools | tojson }}{% endif -%}"
    "{%- if add_generation_prompt %} date={{ strftime_now('%Y') | length }}{% endif -%}"
)


def test_rich_chat_template_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    directory = make_tokenizer(tmp_path, chat_template=RICH_TEMPLATE)
    ours = Tokenizer.from_dir(directory)
    theirs = transformers.PreTrainedTokenizerFast.from_pretrained(str(directory))
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": " q1 "},
                {"role": "assistant", "content": "a"}, {"role": "user", "content": "q2 ü"}]
    tools = [{"name": "lookup", "description": "find ü", "parameters": {"type": "object"}}]
    expected = theirs.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    assert ours.apply_chat_template(messages, tools=tools) == expected
