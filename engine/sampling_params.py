"""Per-request sampling parameters, with the checks that turn bad requests into clear errors.

The fields follow the OpenAI completion API where it has one (``presence_penalty``, ``frequency_penalty``,
``logit_bias``, ``stop``, ``logprobs``, ``n``) and the usual open-model knobs otherwise (``top_k``,
``min_p``, ``repetition_penalty``). ``temperature == 0`` means greedy decoding. ``validate()`` is called by
the engine when a request is added, so a request with an out-of-range value is refused with a
``ValueError`` that names the field and the allowed range, before it can reach a kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_LOGPROBS = 20
# OpenAI's documented ranges for these request fields.
PENALTY_RANGE = (-2.0, 2.0)
LOGIT_BIAS_RANGE = (-100.0, 100.0)


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 keeps every token
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None  # top-n alternatives per token; 0 = the chosen token's logprob only
    n: int = 1

    def __post_init__(self) -> None:
        # Accept the shapes JSON gives us (a single stop string, lists) without failing here: the
        # type checks live in validate(), which reports them by field name.
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        elif isinstance(self.stop, list):
            self.stop = tuple(self.stop)
        if isinstance(self.stop_token_ids, list):
            self.stop_token_ids = tuple(self.stop_token_ids)
        if isinstance(self.logit_bias, dict):
            # JSON object keys are strings: {"50256": -100} means token 50256.
            self.logit_bias = {_maybe_int(k): v for k, v in self.logit_bias.items()}

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing that edits the logits or asks for more than the token: the row's argmax is
        the whole answer, so a batch of such rows needs no sampler (the ``greedy`` op does it)."""
        return (self.temperature == 0.0 and self.logprobs is None and not self.logit_bias
                and self.presence_penalty == 0.0 and self.frequency_penalty == 0.0
                and self.repetition_penalty == 1.0)

    def validate(self, vocab_size: int | None = None) -> SamplingParams:
        """Raise ValueError naming the first bad field; return self so calls can chain.

        With ``vocab_size`` given, token ids in ``logit_bias`` and ``stop_token_ids`` are checked too.
        """
        _int_in("max_tokens", self.max_tokens, 1, None)
        _float_in("temperature", self.temperature, 0.0, None)
        _float_in("top_p", self.top_p, 0.0, 1.0, low_open=True)
        _int_in("top_k", self.top_k, 0, None, hint="0 disables top-k")
        _float_in("min_p", self.min_p, 0.0, 1.0)
        if self.seed is not None:
            _int_in("seed", self.seed, 0, 2**63 - 1)
        _float_in("presence_penalty", self.presence_penalty, *PENALTY_RANGE)
        _float_in("frequency_penalty", self.frequency_penalty, *PENALTY_RANGE)
        _float_in("repetition_penalty", self.repetition_penalty, 0.0, None, low_open=True)
        self._validate_logit_bias(vocab_size)
        self._validate_stops(vocab_size)
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos must be true or false, got {self.ignore_eos!r}")
        if self.logprobs is not None:
            _int_in("logprobs", self.logprobs, 0, MAX_LOGPROBS)
        _int_in("n", self.n, 1, None)
        return self

    def _validate_logit_bias(self, vocab_size: int | None) -> None:
        if self.logit_bias is None:
            return
        if not isinstance(self.logit_bias, dict):
            raise ValueError(f"logit_bias must be a mapping of token id to bias, got {type(self.logit_bias).__name__}")
        for token_id, bias in self.logit_bias.items():
            _token_id("logit_bias", token_id, vocab_size)
            _float_in(f"logit_bias[{token_id}]", bias, *LOGIT_BIAS_RANGE)

    def _validate_stops(self, vocab_size: int | None) -> None:
        if not isinstance(self.stop, tuple):
            raise ValueError(f"stop must be a string or a list of strings, got {type(self.stop).__name__}")
        for text in self.stop:
            if not isinstance(text, str) or not text:
                raise ValueError(f"stop must hold non-empty strings, got {text!r}")
        if not isinstance(self.stop_token_ids, tuple):
            raise ValueError(
                f"stop_token_ids must be a list of token ids, got {type(self.stop_token_ids).__name__}"
            )
        for token_id in self.stop_token_ids:
            _token_id("stop_token_ids", token_id, vocab_size)


def _maybe_int(key: object) -> object:
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key)
    return key


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(name: str, value: object, low: int, high: int | None, hint: str = "") -> None:
    bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
    if not _is_int(value) or value < low or (high is not None and value > high):
        note = f" ({hint})" if hint else ""
        raise ValueError(f"{name} must be an integer {bounds}{note}, got {value!r}")


def _float_in(name: str, value: object, low: float, high: float | None, low_open: bool = False) -> None:
    left = "(" if low_open else "["
    bounds = f"in {left}{low}, {high}]" if high is not None else f"{'>' if low_open else '>='} {low}"
    ok = (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        raise ValueError(f"{name} must be a finite number {bounds}, got {value!r}")


def _token_id(name: str, value: object, vocab_size: int | None) -> None:
    if not _is_int(value) or value < 0 or (vocab_size is not None and value >= vocab_size):
        limit = f" below the vocabulary size {vocab_size}" if vocab_size is not None else ""
        raise ValueError(f"{name} holds {value!r}; token ids are non-negative integers{limit}")
