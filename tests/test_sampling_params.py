"""SamplingParams.validate names the bad field and its range; Sequence keeps prompt + output in step."""

from __future__ import annotations

import math

import pytest

from engine.sampling_params import SamplingParams
from engine.sequence import Sequence, SequenceStatus

pytestmark = pytest.mark.engine


def test_defaults_and_typical_requests_are_valid():
    SamplingParams().validate()
    SamplingParams(temperature=0, max_tokens=1, logprobs=0).validate()
    SamplingParams(
        temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, seed=0, presence_penalty=-2, frequency_penalty=2.0,
        repetition_penalty=1.1, logit_bias={3: -100, 4: 100.0}, stop=("\n\n",), stop_token_ids=(2,),
        ignore_eos=True, logprobs=20, n=3,
    ).validate(vocab_size=10)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_tokens", 0, r"max_tokens must be an integer >= 1"),
        ("max_tokens", 2.0, r"max_tokens must be an integer"),
        ("max_tokens", True, r"max_tokens must be an integer"),
        ("temperature", -0.1, r"temperature must be a finite number >= 0.0"),
        ("temperature", math.nan, r"temperature must be a finite number"),
        ("temperature", "hot", r"temperature must be a finite number"),
        ("top_p", 0.0, r"top_p must be a finite number in \(0.0, 1.0\]"),
        ("top_p", 1.5, r"top_p .* in \(0.0, 1.0\]"),
        ("top_k", -1, r"top_k must be an integer >= 0 \(0 disables top-k\)"),
        ("min_p", 1.01, r"min_p must be a finite number in \[0.0, 1.0\]"),
        ("seed", -1, r"seed must be an integer in \[0, "),
        ("presence_penalty", 2.5, r"presence_penalty must be a finite number in \[-2.0, 2.0\]"),
        ("frequency_penalty", -3, r"frequency_penalty .* \[-2.0, 2.0\]"),
        ("repetition_penalty", 0.0, r"repetition_penalty must be a finite number > 0.0"),
        ("logit_bias", {1: 101}, r"logit_bias\[1\] must be a finite number in \[-100.0, 100.0\]"),
        ("logit_bias", {-1: 1.0}, r"logit_bias holds -1; token ids are non-negative"),
        ("logit_bias", [1, 2], r"logit_bias must be a mapping"),
        ("stop", ("ok", ""), r"stop must hold non-empty strings"),
        ("stop", 5, r"stop must be a string or a list of strings"),
        ("stop_token_ids", (1, "2"), r"stop_token_ids holds '2'"),
        ("ignore_eos", 1, r"ignore_eos must be true or false"),
        ("logprobs", 21, r"logprobs must be an integer in \[0, 20\]"),
        ("logprobs", -1, r"logprobs must be an integer in \[0, 20\]"),
        ("n", 0, r"n must be an integer >= 1"),
    ],
)
def test_bad_values_name_the_field_and_range(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**{field: value}).validate()


def test_token_ids_are_checked_against_the_vocabulary_when_known():
    SamplingParams(stop_token_ids=(99,), logit_bias={99: 1.0}).validate()
    with pytest.raises(ValueError, match=r"stop_token_ids holds 99; .* below the vocabulary size 50"):
        SamplingParams(stop_token_ids=(99,)).validate(vocab_size=50)
    with pytest.raises(ValueError, match="logit_bias holds 50;"):
        SamplingParams(logit_bias={50: 1.0}).validate(vocab_size=50)


def test_json_shapes_are_normalised():
    params = SamplingParams(stop="END", stop_token_ids=[3, 4], logit_bias={"7": 2.0, "-1": 1.0})
    assert params.stop == ("END",)
    assert params.stop_token_ids == (3, 4)
    assert params.logit_bias == {7: 2.0, -1: 1.0}
    with pytest.raises(ValueError, match="logit_bias holds -1"):
        params.validate()
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")
    assert SamplingParams(temperature=0).greedy and not SamplingParams().greedy


def test_sequence_tracks_prompt_and_output():
    params = SamplingParams(max_tokens=3)
    seq = Sequence("r1", [5, 6, 7], params, arrival_time=1.5)
    assert seq.status is SequenceStatus.WAITING and not seq.is_finished
    assert (seq.num_tokens, seq.num_prompt_tokens, seq.num_output_tokens) == (3, 3, 0)
    assert seq.num_uncomputed_tokens == 3 and seq.last_token_id == 7
    seq.append_token(9, logprob_entry=("lp", -0.5))
    seq.append_token(8)  # entries are optional (no logprobs requested)
    assert seq.token_ids == [5, 6, 7, 9, 8] and seq.output_token_ids == [9, 8]
    assert seq.last_token_id == 8 and seq.num_tokens == 5
    assert seq.output_logprobs == [("lp", -0.5)]
    seq.status = SequenceStatus.FINISHED
    assert seq.is_finished


def test_sequence_arrival_order_breaks_clock_ties():
    first = Sequence("a", [1], arrival_time=2.0)
    second = Sequence("b", [1], arrival_time=2.0)
    earlier = Sequence("c", [1], arrival_time=1.0)
    assert sorted([second, earlier, first], key=lambda s: s.arrival_key) == [earlier, first, second]


def test_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="empty prompt"):
        Sequence("r", [])
