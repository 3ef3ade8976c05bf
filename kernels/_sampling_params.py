"""Per-row sampling parameters packed for one batched launch (see ``kernels/sampling.py`` for the math).

``SamplingTensors.build`` validates every request's parameters on the host, turns the prompt and output
token lists into a sparse list of *edits* (the few vocabulary entries that a penalty or a logit bias
touches), derives each row's random-number key from its seed and step, and copies everything to the
device in one transfer of one int32 host block (the floats travel as their bits): a float32 [6, B] block of
per-row floats, an int32 [4, B] block of per-row integers, the edit offsets and the edit arrays. The named
fields are views into that block.

Host cost matters here (it is paid on every engine step): parameters are checked column-wise over the
batch (a row that fails is checked again alone, for a message naming it), and only rows with a penalty
or a bias look at their token lists; the token lists of the other rows are neither read nor checked.

Edits are stored CSR-style: row ``r``'s edits are ``edit_token[edit_start[r]:edit_start[r+1]]``, each
token appearing once per row, with its count among the generated tokens (frequency and presence
penalties), whether it appears in the prompt or the output (repetition penalty) and its logit bias.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

MAX_LOGPROBS = 20
NO_LOGPROBS = -1  # num_logprobs value of a row that asked for none
# Temperatures below this are greedy: x / T would overflow float32 for ordinary logits (then every row
# would look like it held +inf logits) and the distribution is an argmax anyway.
GREEDY_BELOW = 1e-5

_M32 = np.uint64(0xFFFFFFFF)


class SamplingParamsError(ValueError):
    """A request's sampling parameters are out of range; the message names the row and the field."""


def mix32(x: np.ndarray) -> np.ndarray:
    """A 32-bit integer hash (xor-shift-multiply), the same one the kernel and the reference apply."""
    x = x.astype(np.uint64) & _M32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & _M32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & _M32
    x ^= x >> np.uint64(16)
    return x


def _mix32_int(x: int) -> int:
    """``mix32`` on one Python integer (a few rows hash faster without numpy's per-call overhead)."""
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


SMALL_BATCH = 16  # up to this many rows, per-row Python beats numpy's fixed cost per call


def rng_keys(seeds: list[int], steps: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Two 32-bit keys per row from (seed, step): the row's noise depends on nothing else."""
    if len(seeds) <= SMALL_BATCH:
        k1 = [_mix32_int((s & 0xFFFFFFFF) ^ _mix32_int((s >> 32) ^ _mix32_int((int(t) & 0xFFFFFFFF) + 0x632BE5AB)))
              for s, t in zip((int(v) % (1 << 64) for v in seeds), steps, strict=True)]
        k2 = [_mix32_int(k ^ 0x85EBCA6B) for k in k1]
        return np.array(k1, dtype=np.uint32).view(np.int32), np.array(k2, dtype=np.uint32).view(np.int32)
    s = np.array([int(v) % (1 << 64) for v in seeds], dtype=np.uint64)
    step = np.array(steps, dtype=np.uint64) & _M32
    lo, hi = s & _M32, s >> np.uint64(32)
    k1 = mix32(lo ^ mix32(hi ^ mix32(step + np.uint64(0x632BE5AB))))
    k2 = mix32(k1 ^ np.uint64(0x85EBCA6B))
    return k1.astype(np.uint32).view(np.int32), k2.astype(np.uint32).view(np.int32)


def _finite(name: str, row: int, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SamplingParamsError(f"row {row}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise SamplingParamsError(f"row {row}: {name} must be finite, got {value!r}")
    return v


def _check_row(row: int, p, vocab_size: int) -> tuple:
    temperature = _finite("temperature", row, p.temperature)
    if temperature < 0:
        raise SamplingParamsError(f"row {row}: temperature must be >= 0 (0 = greedy), got {temperature}")
    top_k = p.top_k if p.top_k is not None else 0
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise SamplingParamsError(f"row {row}: top_k must be an integer >= 0 (0 = off), got {p.top_k!r}")
    top_p = _finite("top_p", row, 1.0 if p.top_p is None else p.top_p)
    if not 0.0 < top_p <= 1.0:
        raise SamplingParamsError(f"row {row}: top_p must lie in (0, 1] (1 = off), got {top_p}")
    min_p = _finite("min_p", row, 0.0 if p.min_p is None else p.min_p)
    if not 0.0 <= min_p <= 1.0:
        raise SamplingParamsError(f"row {row}: min_p must lie in [0, 1] (0 = off), got {min_p}")
    rep = _finite("repetition_penalty", row, p.repetition_penalty)
    if rep <= 0:
        raise SamplingParamsError(f"row {row}: repetition_penalty must be > 0 (1 = off), got {rep}")
    pres = _finite("presence_penalty", row, p.presence_penalty)
    freq = _finite("frequency_penalty", row, p.frequency_penalty)
    n = p.logprobs
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= MAX_LOGPROBS):
        raise SamplingParamsError(f"row {row}: logprobs must be None or an integer in [0, {MAX_LOGPROBS}], got {n!r}")
    bias = p.logit_bias or {}
    for tok, b in bias.items():
        if isinstance(tok, bool) or not isinstance(tok, (int, np.integer)) or not 0 <= tok < vocab_size:
            raise SamplingParamsError(f"row {row}: logit_bias token {tok!r} is not a token id in [0, {vocab_size})")
        _finite(f"logit_bias[{tok}]", row, b)
    top_k = 0 if top_k >= vocab_size else int(top_k)  # keeping the whole vocabulary is no filter
    n = NO_LOGPROBS if n is None else min(int(n), vocab_size)  # a tiny vocabulary has fewer than n tokens
    return temperature, top_k, top_p, min_p, rep, pres, freq, n, bias


def _check_rows(params: list, vocab_size: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Every row's checked parameters as columns: floats [6, B] (temperature, top_p, min_p, repetition,
    presence, frequency), ints [2, B] (top_k, num_logprobs) and each row's logit bias.

    The common rows (plain numbers in range, integer top_k and logprobs) are checked column-wise; if any
    row is doubtful every row goes through ``_check_row``, which accepts the same rows with the same values
    and raises the message naming the row and the field for the bad one."""
    if len(params) <= SMALL_BATCH:
        return _check_each_row(params, vocab_size)
    try:
        floats = np.array([(p.temperature, 1.0 if p.top_p is None else p.top_p, 0.0 if p.min_p is None else p.min_p,
                            p.repetition_penalty, p.presence_penalty, p.frequency_penalty) for p in params],
                          dtype=np.float64).reshape(len(params), 6).T
        top_k = [0 if p.top_k is None else p.top_k for p in params]
        logprobs = [p.logprobs for p in params]
        biases = [p.logit_bias or {} for p in params]
    except (TypeError, ValueError):
        floats = None
    if (floats is not None and all(type(k) is int for k in top_k)
            and all(n is None or type(n) is int for n in logprobs)):
        t, tp, mp, rep = floats[0], floats[1], floats[2], floats[3]
        ints = np.array([top_k, [NO_LOGPROBS if n is None else n for n in logprobs]],
                        dtype=np.int64).reshape(2, len(params))
        asked = np.array([n is not None for n in logprobs], dtype=bool)
        ok = (np.isfinite(floats).all() and (t >= 0).all() and ((tp > 0) & (tp <= 1)).all()
              and ((mp >= 0) & (mp <= 1)).all() and (rep > 0).all() and (ints[0] >= 0).all()
              and ((ints[1][asked] >= 0) & (ints[1][asked] <= MAX_LOGPROBS)).all())
        if ok and not any(biases):
            ints[0][ints[0] >= vocab_size] = 0  # keeping the whole vocabulary is no filter
            np.minimum(ints[1], vocab_size, out=ints[1])  # a tiny vocabulary has fewer than n tokens
            return floats, ints, biases
    return _check_each_row(params, vocab_size)


def _check_each_row(params: list, vocab_size: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    rows = [_check_row(r, p, vocab_size) for r, p in enumerate(params)]
    floats = np.array([(t, tp, mp, rep, pres, freq) for t, _, tp, mp, rep, pres, freq, _, _ in rows],
                      dtype=np.float64).reshape(len(params), 6).T
    ints = np.array([(k, n) for _, k, _, _, _, _, _, n, _ in rows], dtype=np.int64).reshape(len(params), 2).T
    return floats, ints, [row[-1] for row in rows]


def _flat_tokens(lists: list, rows: list[int], what: str, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows' token lists as one int64 array and the row of each token; a token id outside the
    vocabulary raises, naming the first row that holds one."""
    lengths = [len(ids) for ids in lists]
    if lists and all(isinstance(ids, list) for ids in lists):
        flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=sum(lengths))
    else:
        flat = np.concatenate([np.asarray(ids, dtype=np.int64).reshape(-1) for ids in lists] or [np.zeros(0, np.int64)])
    if flat.size and (flat.min() < 0 or flat.max() >= vocab_size):
        for r, ids in zip(rows, lists, strict=True):
            a = np.asarray(ids, dtype=np.int64)
            if a.size and (a.min() < 0 or a.max() >= vocab_size):
                raise SamplingParamsError(f"row {r}: {what} holds a token id outside [0, {vocab_size})")
    return flat, np.repeat(np.asarray(rows, dtype=np.int64), lengths)


def _sorted_unique(keys: np.ndarray, return_counts: bool = False):
    """``np.unique`` by one sort: a stable sort (timsort) merges the already sorted runs of concatenated
    key blocks in near-linear time, where numpy's hash-based unique is several times slower here."""
    keys = np.sort(keys, kind="stable")
    first = np.ones(keys.size, dtype=bool)
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    unique = keys[first]
    if not return_counts:
        return unique
    return unique, np.diff(np.append(np.flatnonzero(first), keys.size))


def _edits(rows: list[int], rep, pres, freq, biases, prompt_ids, output_ids, B: int, vocab_size: int):
    """The edits of the given rows, all rows at once: (edits per row [B], token, count, in_context, bias).

    Row r touches context(r) = prompt(r) | output(r) when its repetition penalty is on, output(r) when a
    presence or frequency penalty is on, and its logit-bias tokens. Each (row, token) pair is the key
    row * V + token, so one sort over the batch's keys orders the edits by row, then by token."""
    V = vocab_size
    out_tok, out_row = _flat_tokens([output_ids[r] for r in rows], rows, "output_ids", V)
    out_keys, out_count = _sorted_unique(out_row * V + out_tok, return_counts=True)
    key_row = out_keys // V
    rep_rows = [r for r in rows if rep[r] != 1.0]
    if rep_rows:
        prompt_tok, prompt_row = _flat_tokens([prompt_ids[r] for r in rep_rows], rep_rows, "prompt_ids", V)
        rep_on = np.zeros(B, dtype=bool)
        rep_on[rep_rows] = True
        context = _sorted_unique(np.concatenate([prompt_row * V + prompt_tok, out_keys[rep_on[key_row]]]))
    else:
        context = np.zeros(0, dtype=np.int64)
    counted = (pres != 0.0) | (freq != 0.0)
    parts = [context, out_keys[counted[key_row]]]
    bias_rows = [r for r in rows if biases[r]]
    if bias_rows:
        bias_keys = np.array([r * V + int(t) for r in bias_rows for t in biases[r]], dtype=np.int64)
        bias_values = np.array([float(v) for r in bias_rows for v in biases[r].values()], dtype=np.float32)
        parts.append(bias_keys)
    keys = _sorted_unique(np.concatenate(parts))
    count = np.zeros(keys.size, dtype=np.int64)
    if out_keys.size:
        pos = np.minimum(np.searchsorted(out_keys, keys), out_keys.size - 1)
        count = np.where(out_keys[pos] == keys, out_count[pos], 0)
    in_context = np.zeros(keys.size, dtype=np.int64)
    if context.size:
        pos = np.minimum(np.searchsorted(context, keys), context.size - 1)
        in_context = (context[pos] == keys).astype(np.int64)
    bias = np.zeros(keys.size, dtype=np.float32)
    if bias_rows:
        bias[np.searchsorted(keys, bias_keys)] = bias_values
    per_row = np.bincount(keys // V, minlength=B).astype(np.int32)
    return per_row, keys % V, count, in_context, bias


@dataclass
class SamplingTensors:
    """Per-row parameter tensors on the logits' device (views into a few packed blocks)."""

    temperature: torch.Tensor        # float32 [B]; 0 = greedy
    top_p: torch.Tensor              # float32 [B]; 1 = off
    min_p: torch.Tensor              # float32 [B]; 0 = off
    repetition_penalty: torch.Tensor  # float32 [B]; 1 = off
    presence_penalty: torch.Tensor   # float32 [B]
    frequency_penalty: torch.Tensor  # float32 [B]
    top_k: torch.Tensor              # int32 [B]; 0 = off
    rng_key1: torch.Tensor           # int32 [B]: 32-bit keys derived from (seed, step)
    rng_key2: torch.Tensor           # int32 [B]
    num_logprobs: torch.Tensor       # int32 [B]; -1 = none, 0 = chosen token only, n = top n too
    edit_start: torch.Tensor         # int32 [B + 1]: CSR offsets into the edit arrays
    edit_token: torch.Tensor         # int32 [E]
    edit_count: torch.Tensor         # int32 [E]: occurrences among the generated tokens
    edit_in_context: torch.Tensor    # int32 [E]: 1 if in prompt or output (repetition penalty applies)
    edit_bias: torch.Tensor          # float32 [E]
    vocab_size: int
    max_logprobs: int | None         # widest top-logprobs request in the batch (None: no row asked)
    has_edits: bool                  # some row has a penalty or a bias to apply
    greedy_only: bool                # every row is greedy
    # The largest top-k of the sampled rows with a filter (top-k, top-p or min-p); None when one of them
    # filters without a top-k (its kept set can only be found over the whole vocabulary). 0: no such row.
    candidate_bound: int | None = None

    @property
    def batch(self) -> int:
        return self.temperature.shape[0]

    @staticmethod
    def build(params: list, prompt_ids: list[list[int]], output_ids: list[list[int]], seeds: list[int],
              vocab_size: int, device) -> SamplingTensors:
        B = len(params)
        if not (len(prompt_ids) == len(output_ids) == len(seeds) == B):
            raise SamplingParamsError(
                f"params, prompt_ids, output_ids and seeds need one entry per row; got {B}, {len(prompt_ids)}, "
                f"{len(output_ids)} and {len(seeds)}")
        if vocab_size < 1:
            raise SamplingParamsError(f"vocab_size must be >= 1, got {vocab_size}")
        floats64, ints64, biases = _check_rows(params, vocab_size)
        floats64[0][floats64[0] < GREEDY_BELOW] = 0.0
        rep, pres, freq = floats64[3], floats64[4], floats64[5]
        # Most rows have no penalty and no bias: only the others look at their token lists.
        has_bias = np.array([bool(b) for b in biases], dtype=bool)
        edited = np.flatnonzero((rep != 1.0) | (pres != 0.0) | (freq != 0.0) | has_bias)
        if edited.size:
            counts, e_tok, e_cnt, e_ctx, e_bias = _edits(edited.tolist(), rep, pres, freq, biases, prompt_ids,
                                                         output_ids, B, vocab_size)
        else:
            counts = np.zeros(B, dtype=np.int32)
        E = int(counts.sum())
        # One int32 host block, one copy to the device, sliced there (floats travel as their bits):
        #   floats [6, B] | top_k, key1, key2, num_logprobs [4, B] | edit_start [B + 1] | edits [3, E'] | bias [E']
        E1 = max(E, 1)  # kernels index the edit arrays even when no row edits: keep them non-empty
        host = np.zeros(10 * B + B + 1 + 4 * E1, dtype=np.int32)
        host[:6 * B].view(np.float32)[:] = floats64.reshape(-1)
        ints = host[6 * B:10 * B].reshape(4, B)
        ints[0], ints[3] = ints64[0], ints64[1]
        ints[1], ints[2] = rng_keys(seeds, [len(o) for o in output_ids])
        np.cumsum(counts, out=host[10 * B + 1:11 * B + 1])
        if E:
            host[11 * B + 1:11 * B + 1 + 3 * E1].reshape(3, E1)[:] = (e_tok, e_cnt, e_ctx)
            host[11 * B + 1 + 3 * E1:].view(np.float32)[:] = e_bias
        dev = _to_device(host, device)
        temperature, top_p, min_p, rep_t, pres_t, freq_t = dev[:6 * B].view(torch.float32).view(6, B).unbind()
        top_k, key1, key2, num_logprobs = dev[6 * B:10 * B].view(4, B).unbind()
        edit_token, edit_count, edit_in_context = dev[11 * B + 1:11 * B + 1 + 3 * E1].view(3, E1).unbind()
        max_n = int(ints64[1].max()) if B else NO_LOGPROBS
        filtered = (floats64[0] > 0) & ((floats64[1] < 1.0) | (floats64[2] > 0.0) | (ints64[0] > 0))
        bound = None if (filtered & (ints64[0] == 0)).any() else int(ints64[0][filtered].max(initial=0))
        return SamplingTensors(
            temperature=temperature, top_p=top_p, min_p=min_p, repetition_penalty=rep_t,
            presence_penalty=pres_t, frequency_penalty=freq_t,
            top_k=top_k, rng_key1=key1, rng_key2=key2, num_logprobs=num_logprobs,
            edit_start=dev[10 * B:11 * B + 1],
            edit_token=edit_token, edit_count=edit_count, edit_in_context=edit_in_context,
            edit_bias=dev[11 * B + 1 + 3 * E1:].view(torch.float32),
            vocab_size=vocab_size, max_logprobs=None if max_n <= 0 else max_n, has_edits=E > 0,
            greedy_only=bool((host[:B].view(np.float32) == 0).all()), candidate_bound=bound,
        )


def _to_device(host: np.ndarray, device) -> torch.Tensor:
    t = torch.from_numpy(host)
    if torch.device(device).type == "cpu":
        return t
    # Pinned (from torch's caching host allocator, which keeps the block until the copy is done) so the
    # copy is asynchronous: the step does not wait here for the GPU to drain.
    return t.pin_memory().to(device, non_blocking=True)


@dataclass
class SampleResult:
    token_ids: torch.Tensor                # int64 [B]
    logprobs: torch.Tensor                 # float32 [B]: the chosen token's log-probability
    top_ids: torch.Tensor | None           # int64 [B, n]; n = widest request; -1 pads shorter requests
    top_logprobs: torch.Tensor | None      # float32 [B, n]; -inf pads
    # The token ids already read back to the host, when the launcher had to read them anyway (it checks
    # them for invalid rows): the engine uses them instead of a second device-to-host copy.
    host_token_ids: list[int] | None = None


@dataclass
class RequestParams:
    """A plain parameter record with OpenAI/vLLM defaults, for tests, benchmarks and the CLI."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] | None = None
    logprobs: int | None = None
