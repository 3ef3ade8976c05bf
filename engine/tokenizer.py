"""Tokenizer: a ``tokenizers.Tokenizer`` plus what tokenizer_config.json adds (special tokens, chat template).

Chat templates are Jinja2 programs shipped with the model, so they are rendered in Jinja's immutable
sandbox (no attribute access to Python internals, no mutation of the inputs), with the few helpers
Hugging Face templates expect (``raise_exception``, ``strftime_now``, a ``tojson`` that keeps Unicode).

Text rendered by a chat template usually already contains the BOS token: encode it with
``add_special_tokens=False`` so that BOS is not added twice.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.detokenizer import IncrementalDetokenizer, StopStringMatcher

__all__ = ["IncrementalDetokenizer", "NoChatTemplateError", "StopStringMatcher", "Tokenizer", "TokenizerError"]


class TokenizerError(ValueError):
    """The tokenizer files are missing or malformed, or the input cannot be tokenized."""


class NoChatTemplateError(TokenizerError):
    """The model ships no chat template, so chat messages cannot be turned into a prompt."""


class Tokenizer:
    def __init__(self, backend, config: dict | None = None, eos_token_ids: list[int] | None = None,
                 bos_token_id: int | None = None, chat_template: str | None = None):
        """Wrap a ``tokenizers.Tokenizer``; ``config`` is the parsed tokenizer_config.json (may be empty)."""
        self.backend = backend
        self.config = dict(config or {})
        self.chat_template = chat_template if chat_template is not None else _pick_template(
            self.config.get("chat_template"))
        self.bos_token = _token_text(self.config.get("bos_token"))
        self.eos_token = _token_text(self.config.get("eos_token"))
        self.bos_token_id = bos_token_id if bos_token_id is not None else self._id_of(self.bos_token)
        eos = list(eos_token_ids or [])
        own_eos = self._id_of(self.eos_token)
        if own_eos is not None and own_eos not in eos:
            eos.append(own_eos)
        self.eos_token_ids = eos
        self.add_bos_token = bool(self.config.get("add_bos_token", False))
        self._special_ids = {i for i, t in backend.get_added_tokens_decoder().items() if t.special}

    @classmethod
    def from_dir(cls, directory, eos_token_ids: list[int] | None = None) -> Tokenizer:
        """Load tokenizer.json, tokenizer_config.json and chat_template.jinja (when present) from ``directory``."""
        from tokenizers import Tokenizer as Backend

        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"{directory}: no tokenizer.json; tritonforge needs a fast-tokenizer file "
                                 "(tokenizer.json) beside the model")
        try:
            backend = Backend.from_file(str(path))
        except Exception as err:  # the Rust library raises a bare Exception subclass for malformed files
            raise TokenizerError(f"{path}: cannot parse the tokenizer: {err}") from err
        config = _read_json(directory / "tokenizer_config.json")
        template = None
        jinja = directory / "chat_template.jinja"
        if jinja.is_file():
            template = jinja.read_text()
        elif (directory / "chat_template.json").is_file():
            template = _pick_template(_read_json(directory / "chat_template.json").get("chat_template"))
        return cls(backend, config, eos_token_ids=eos_token_ids, chat_template=template)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = self.backend.encode(text, add_special_tokens=add_special_tokens).ids
        # Some checkpoints ask for BOS in tokenizer_config.json without a post-processor that adds it.
        if (add_special_tokens and self.add_bos_token and self.bos_token_id is not None
                and (not ids or ids[0] != self.bos_token_id)):
            ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
        """Render chat ``messages`` ([{"role", "content"}, ...]) into a prompt string with the model's template.

        ``extra`` is passed to the template (e.g. ``tools``, ``enable_thinking``). Raises
        NoChatTemplateError when the model has none, TokenizerError when the template fails.
        """
        if not self.chat_template:
            raise NoChatTemplateError(
                "this model has no chat template (none in tokenizer_config.json or chat_template.jinja); "
                "use a plain completion prompt instead, or an instruction-tuned model")
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise TypeError("messages must be a list of dicts with 'role' and 'content' keys")
        try:
            template = _jinja_env().from_string(self.chat_template)
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   bos_token=self.bos_token or "", eos_token=self.eos_token or "", **extra)
        except TokenizerError:
            raise
        except Exception as err:  # jinja raises many types (TemplateError, TypeError from template code)
            raise TokenizerError(f"the model's chat template failed to render: {err}") from err

    def _id_of(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)


def _raise_exception(message):
    raise TokenizerError(f"chat template rejected the messages: {message}")


def _strftime_now(fmt):
    from datetime import datetime

    return datetime.now().strftime(fmt)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _jinja_env():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # trim_blocks/lstrip_blocks: HF templates are written assuming these (block tags leave no newlines).
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _pick_template(value) -> str | None:
    """tokenizer_config's chat_template is a string, or a list of {"name", "template"} (use "default")."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        return named.get("default") or next(iter(named.values()), None)
    raise TokenizerError(f"chat_template must be a string or a list of named templates, got {type(value).__name__}")


def _token_text(value) -> str | None:
    """Special tokens in tokenizer_config.json are strings or AddedToken dicts {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TokenizerError(f"{path}: cannot parse: {err}") from err
    if not isinstance(data, dict):
        raise TokenizerError(f"{path}: expected a JSON object")
    return data
