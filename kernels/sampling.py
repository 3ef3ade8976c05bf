"""Token sampling: penalties, temperature, min-p, top-k, top-p, a seeded draw and logprobs, one launch.

Input: logits [B, V] (float32; bf16 and fp16 are upcast in the kernel) and a ``SamplingTensors`` holding
each row's own parameters (built once per step by ``SamplingTensors.build``). Every row is processed in
this order, which is vLLM's (v1 sampler):

1. logit bias:            x_i = logits_i + bias_i
2. repetition penalty     (Hugging Face; tokens in the prompt or the output): x_i / r if x_i > 0 else x_i * r
3. frequency, presence    (OpenAI; tokens in the output, c_i = count): x_i -= f * c_i + p * [c_i > 0]
4. temperature:           z_i = x_i / T.  T = 0 (or any T < 1e-5) is greedy: the token is argmax_i x_i,
                          lowest index on ties, and steps 5-7 do not apply.
5. min-p:                 keep z_i >= m + log(min_p), m = max_i z_i (p_i >= min_p * p_max)
6. top-k:                 keep the k largest survivors: z_i >= v_k, v_k the k-th largest value
7. top-p:                 on the survivors' renormalised distribution, keep the smallest set of largest
                          tokens whose mass reaches p: z_i >= v*, v* the largest value whose mass of tokens
                          >= v* is at least p times the survivors' mass
8. draw:                  argmax over kept tokens of z_i + Gumbel noise keyed by (seed, step, i), an exact
                          sample of softmax(z) restricted to the kept set.

Every filter is a threshold on z, so tokens tied at a threshold are all kept (top-k may keep more than k
tokens when the k-th value is tied; vLLM's sort would cut the tie arbitrarily).

Logprobs are those of log_softmax(z): after bias, penalties and temperature (steps 1-4), before the
filters, with T taken as 1 for greedy rows. (vLLM returns the raw model logprobs by default; this is the
distribution the filters start from, so a kept token's logprob says how likely the request's settings made
it before truncation.) The chosen token's is always returned; a row with ``logprobs = n > 0`` also gets
its n most likely tokens (ties: lowest index first), padded with id -1 and -inf up to the batch's widest
request.

Invalid logits: a row holding NaN or +inf, or no finite logit at all, makes ``sample`` raise ValueError
naming the rows (the kernel flags them and writes token -1 there; the launcher reads the tokens back, one
small device-to-host copy, and returns them as ``host_token_ids`` so that the caller need not copy again).
-inf logits are valid and never sampled.

Two kernels. Batches of at most 256 rows with no top-logprobs request whose filtered rows all have a
top-k of at most 256 take the split path (``kernels/_sampling_split.py``): each row cut into chunks of
8192 tokens, one program per chunk, then one program per row on the chunks' partials and candidates; it
draws the same tokens. Every other batch takes the row-wise kernel below (also registered alone as
``sample_rowwise``).

Row-wise kernel: one program per row, the row streamed in blocks. Edited rows (bias or penalties) first copy the
row to a float32 workspace and patch their few edited entries there. Pass 0 computes the max, the softmax
sum, the argmax and the minimum; greedy rows and rows without filters (their Gumbel argmax is fused into
pass 0) are done after it. Top-k and top-p find their thresholds by a pivot search (``_sampling_search``),
a few passes each, never a sort of the vocabulary; one final pass draws. A row with top-k <= 1024 and
top-p gathers its top-k survivors once into a small per-row buffer and runs top-p and the draw there.
Rows asking for top logprobs search the n-th largest value and gather the tokens above it. Bytes: the
logits are read once per pass, from L2 when a row fits there.
"""

from __future__ import annotations

import torch

from kernels import alloc
from kernels._sampling_params import MAX_LOGPROBS, SampleResult, SamplingParamsError, SamplingTensors
from kernels._sampling_reference import sample_baseline, sample_reference
from kernels._sampling_registration import op_fields
from kernels._sampling_search import (
    _draw_from_candidates,
    _gather_candidates,
    _gumbel,
    _gumbel_argmax,
    _load_z,
    _patch_edits,
    _threshold_search,
)
from kernels._sampling_split import handles, launch_split
from kernels._triton import tl, triton
from kernels.device import check_backend, interpreting
from kernels.greedy import raise_for_invalid
from kernels.registry import Op, register, register_impl
from kernels.tuning import Tuned

__all__ = ["MAX_LOGPROBS", "SampleResult", "SamplingParamsError", "SamplingTensors", "sample",
           "sample_reference"]


@triton.jit
def _apply_edits(logits_ptr, work_ptr, row_l, row_w, V, e0, e1, etok_ptr, ecnt_ptr, ectx_ptr, ebias_ptr,
                 rep, pres, freq, BLOCK: tl.constexpr, EBLOCK: tl.constexpr):
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < V
        tl.store(work_ptr + row_w + offs, tl.load(logits_ptr + row_l + offs, mask=mask).to(tl.float32), mask=mask)
    tl.debug_barrier()  # the patches below overwrite entries other threads of this program copied
    _patch_edits(logits_ptr, work_ptr, row_l, row_w, 0, V, e0, e1, etok_ptr, ecnt_ptr, ectx_ptr, ebias_ptr,
                 rep, pres, freq, EBLOCK)
    tl.debug_barrier()  # later passes read the patched row


@triton.jit
def _top_logprobs(logits_ptr, work_ptr, row_l, row_w, V, from_work, inv_t, m, zmin, lse, n, width,
                  top_ids_ptr, top_lp_ptr, tie_ptr, row,
                  BLOCK: tl.constexpr, SBLOCK: tl.constexpr, NPIV: tl.constexpr, MAX_PASSES: tl.constexpr,
                  TOPN: tl.constexpr):
    """The n largest z of the row with their logprobs, ordered by value (ties: lower index first)."""
    jj = tl.arange(0, TOPN)
    out = row.to(tl.int64) * width
    vn = _threshold_search(logits_ptr, work_ptr, row_l, row_w, V, from_work, inv_t, m, zmin, m,
                           n, 0.0, 0, False, BLOCK, SBLOCK, NPIV, MAX_PASSES)
    n_gt = tl.zeros([], tl.int32)
    n_eq = tl.zeros([], tl.int32)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = _load_z(logits_ptr, work_ptr, row_l, row_w, offs, offs < V, from_work, inv_t)
        gt = (z > vn).to(tl.int32)
        eq = (z == vn).to(tl.int32)
        found_gt = tl.sum(gt, 0)
        found_eq = tl.sum(eq, 0)
        if found_gt + found_eq > 0:  # most chunks hold none of the top n: skip their scans
            pos = n_gt + tl.cumsum(gt, 0) - 1
            tl.store(top_ids_ptr + out + pos, offs.to(tl.int64), mask=(gt != 0) & (pos < n))
            tl.store(top_lp_ptr + out + pos, z - lse, mask=(gt != 0) & (pos < n))
            pos = n_eq + tl.cumsum(eq, 0) - 1
            tl.store(tie_ptr + row * TOPN + pos, offs, mask=(eq != 0) & (pos < TOPN))
        n_gt += found_gt
        n_eq += found_eq
    tl.debug_barrier()
    n_gt = tl.minimum(n_gt, n)
    fill = (jj < n_eq) & (n_gt + jj < n)
    ties = tl.load(tie_ptr + row * TOPN + jj, mask=fill, other=0)
    tl.store(top_ids_ptr + out + n_gt + jj, ties.to(tl.int64), mask=fill)
    tl.store(top_lp_ptr + out + n_gt + jj, tl.zeros([TOPN], tl.float32) + (vn - lse), mask=fill)
    tl.debug_barrier()
    valid = jj < n
    ids = tl.load(top_ids_ptr + out + jj, mask=valid, other=0)
    lps = tl.load(top_lp_ptr + out + jj, mask=valid, other=float("-inf"))
    # Rank by (logprob desc, id asc) with an n x n comparison: n <= 32, no sort needed.
    before = (lps[None, :] > lps[:, None]) | ((lps[None, :] == lps[:, None]) & (ids[None, :] < ids[:, None]))
    rank = tl.sum((before & valid[None, :]).to(tl.int32), 1)
    tl.debug_barrier()
    tl.store(top_ids_ptr + out + rank, ids, mask=valid)
    tl.store(top_lp_ptr + out + rank, lps, mask=valid)


# Per-step values: the batch-dependent ints, and the per-row parameter and result arrays, which are slices
# of one packed buffer whose alignment changes with the batch (scalar loads: alignment buys nothing).
@triton.jit(do_not_specialize=[
    "temp_ptr", "topp_ptr", "minp_ptr", "rep_ptr", "pres_ptr", "freq_ptr", "topk_ptr", "key1_ptr", "key2_ptr",
    "nlp_ptr", "estart_ptr", "etok_ptr", "ecnt_ptr", "ectx_ptr", "ebias_ptr", "token_ptr", "lp_ptr", "top_ids_ptr",
    "top_lp_ptr", "tie_ptr", "status_ptr", "width", "batch_bucket"])
def _sample_kernel(
    logits_ptr, work_ptr, stride_l, V,
    temp_ptr, topp_ptr, minp_ptr, rep_ptr, pres_ptr, freq_ptr, topk_ptr, key1_ptr, key2_ptr, nlp_ptr,
    estart_ptr, etok_ptr, ecnt_ptr, ectx_ptr, ebias_ptr,
    token_ptr, lp_ptr, top_ids_ptr, top_lp_ptr, tie_ptr, cand_z_ptr, cand_idx_ptr, status_ptr, width, batch_bucket,
    HAS_EDITS: tl.constexpr, TOPN: tl.constexpr, BLOCK: tl.constexpr, SBLOCK: tl.constexpr,
    NPIV: tl.constexpr, CAND: tl.constexpr, MAX_PASSES: tl.constexpr, EBLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    row_l = row.to(tl.int64) * stride_l
    row_w = row.to(tl.int64) * V
    temperature = tl.load(temp_ptr + row)
    top_p = tl.load(topp_ptr + row)
    min_p = tl.load(minp_ptr + row)
    top_k = tl.load(topk_ptr + row)
    key1 = tl.load(key1_ptr + row).to(tl.uint32, bitcast=True)
    key2 = tl.load(key2_ptr + row).to(tl.uint32, bitcast=True)

    if HAS_EDITS:
        e0 = tl.load(estart_ptr + row)
        e1 = tl.load(estart_ptr + row + 1)
        from_work = e1 > e0
        if from_work:
            _apply_edits(logits_ptr, work_ptr, row_l, row_w, V, e0, e1, etok_ptr, ecnt_ptr, ectx_ptr, ebias_ptr,
                         tl.load(rep_ptr + row), tl.load(pres_ptr + row), tl.load(freq_ptr + row), BLOCK, EBLOCK)
    else:
        from_work = False

    greedy = temperature == 0.0
    inv_t = 1.0 / tl.where(greedy, 1.0, temperature)
    unfiltered = (top_k == 0) & (top_p >= 1.0) & (min_p <= 0.0)
    fuse_draw = (temperature > 0.0) & unfiltered

    # Pass 0: max, softmax sum (online, per lane), argmax, smallest finite value, validity, maybe the draw.
    m_vec = tl.full([BLOCK], float("-inf"), tl.float32)
    s_vec = tl.zeros([BLOCK], tl.float32)
    min_vec = tl.full([BLOCK], float("inf"), tl.float32)
    arg_vec = tl.zeros([BLOCK], tl.int32)
    bad = tl.zeros([BLOCK], tl.int32)
    draw_best = tl.full([BLOCK], float("-inf"), tl.float32)
    draw_idx = tl.zeros([BLOCK], tl.int32)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = _load_z(logits_ptr, work_ptr, row_l, row_w, offs, offs < V, from_work, inv_t)
        bad |= ((z != z) | (z == float("inf"))).to(tl.int32)
        arg_vec = tl.where(z > m_vec, offs, arg_vec)
        m_new = tl.maximum(m_vec, z)
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # keeps exp() finite while a lane is all -inf
        s_vec = s_vec * tl.exp(m_vec - m_ref) + tl.exp(z - m_ref)
        m_vec = m_new
        min_vec = tl.minimum(min_vec, tl.where(z > float("-inf"), z, float("inf")))
        if fuse_draw:
            score = z + _gumbel(offs, key1, key2)
            better = score > draw_best
            draw_idx = tl.where(better, offs, draw_idx)
            draw_best = tl.where(better, score, draw_best)
    m = tl.max(m_vec, 0)
    if (tl.max(bad, 0) > 0) | (m == float("-inf")):
        tl.store(status_ptr + row, 1)
        tl.store(token_ptr + row, -1)
        return
    tl.store(status_ptr + row, 0)
    lse = m + tl.log(tl.sum(s_vec * tl.exp(m_vec - m), 0))
    zmin = tl.min(min_vec, 0)

    if greedy:
        token = tl.min(tl.where(m_vec == m, arg_vec, V), 0)
    elif unfiltered:
        best = tl.max(draw_best, 0)
        token = tl.min(tl.where(draw_best == best, draw_idx, V), 0)
    else:
        tau = tl.where(min_p > 0.0, m + tl.log(tl.maximum(min_p, 1e-30)), float("-inf"))
        if top_k > 0:
            v_k = _threshold_search(logits_ptr, work_ptr, row_l, row_w, V, from_work, inv_t, m, zmin, m,
                                    top_k, 0.0, 0, False, BLOCK, SBLOCK, NPIV, MAX_PASSES)
            tau = tl.maximum(tau, v_k)
        n_cand = tl.full([], CAND + 1, tl.int32)
        row_c = row.to(tl.int64) * CAND
        if (top_p < 1.0) & (top_k > 0) & (top_k <= CAND):
            # Top-p only looks at the few top-k survivors: gather them once, then search and draw there.
            n_cand = _gather_candidates(logits_ptr, work_ptr, row_l, row_w, V, from_work, inv_t, tau,
                                        cand_z_ptr, cand_idx_ptr, row_c, BLOCK, CAND)
            tl.debug_barrier()  # the candidates were written by other threads of this program
        if n_cand <= CAND:
            tau = _threshold_search(logits_ptr, cand_z_ptr, row_l, row_c, n_cand, True, 1.0, m,
                                    tau, m, 0.0, top_p, 0, True, CAND, SBLOCK, NPIV, MAX_PASSES)
            token = _draw_from_candidates(cand_z_ptr, cand_idx_ptr, row_c, n_cand, tau, key1, key2, CAND)
        else:
            if top_p < 1.0:
                tau = _threshold_search(logits_ptr, work_ptr, row_l, row_w, V, from_work, inv_t, m,
                                        tl.maximum(tau, zmin), m, 0.0, top_p, 0, True, BLOCK, SBLOCK, NPIV, MAX_PASSES)
            token = _gumbel_argmax(logits_ptr, work_ptr, row_l, row_w, V, from_work, inv_t, tau, key1, key2,
                                   BLOCK)
    tl.store(token_ptr + row, token.to(tl.int64))
    z_tok = _load_z(logits_ptr, work_ptr, row_l, row_w, token, token < V, from_work, inv_t)
    tl.store(lp_ptr + row, z_tok - lse)

    if TOPN > 0:
        n = tl.load(nlp_ptr + row)
        jj = tl.arange(0, TOPN)
        out = row.to(tl.int64) * width
        tl.store(top_ids_ptr + out + jj, tl.full([TOPN], -1, tl.int64), mask=jj < width)
        tl.store(top_lp_ptr + out + jj, tl.full([TOPN], float("-inf"), tl.float32), mask=jj < width)
        if n > 0:
            tl.debug_barrier()
            _top_logprobs(logits_ptr, work_ptr, row_l, row_w, V, from_work, inv_t, m, zmin, lse, n, width,
                          top_ids_ptr, top_lp_ptr, tie_ptr, row, BLOCK, SBLOCK, NPIV, MAX_PASSES, TOPN)


# --- configs (data), chosen at first launch --------------------------------------------------------

CONFIGS = {
    # The first entry is what the interpreter runs: small blocks so CPU tests cross block boundaries.
    # ptxas -v for sm_90 (fp32 and bf16 logits, with and without edits and top logprobs): no spills, except
    # 20-84 bytes in the largest ones once the candidate path was added; BLOCK=8192 with 16 warps spilled
    # hundreds of bytes and was dropped. Autotuned over five configs at a 151936-token vocabulary on an H200
    # (engine start-up, 2026-11-27), every batch class and variant chose one of the last two; the others
    # cost ~5 s of compiling each per variant at start-up and were dropped.
    "cuda": [
        dict(BLOCK=256, SBLOCK=128, NPIV=8, num_warps=2),
        dict(BLOCK=2048, SBLOCK=256, NPIV=16, num_warps=8),
        dict(BLOCK=4096, SBLOCK=512, NPIV=16, num_warps=16),
    ],
    "hip": [
        dict(BLOCK=256, SBLOCK=128, NPIV=8, num_warps=4),
        dict(BLOCK=2048, SBLOCK=256, NPIV=16, num_warps=8),
        dict(BLOCK=4096, SBLOCK=256, NPIV=16, num_warps=8),
        dict(BLOCK=4096, SBLOCK=512, NPIV=16, num_warps=16),
    ],
}
def _keep(c: dict) -> bool:
    # The 256-token block is for the interpreter (CPU tests cross block boundaries); on a GPU it only costs
    # compile time at start-up.
    return interpreting() or c["BLOCK"] > 256


_sample = Tuned(_sample_kernel, CONFIGS, key=["V", "batch_bucket", "HAS_EDITS", "TOPN"], keep=_keep)
MAX_PASSES = 8
EBLOCK = 128
# Candidate buffer per row: top-k <= CAND rows with top-p gather their survivors and finish there. The
# interpreter uses a small one so that CPU tests reach both paths with small vocabularies.
CAND_GPU = 1024
CAND_INTERPRETER = 128


def _check(logits: torch.Tensor, st: SamplingTensors) -> None:
    if not isinstance(st, SamplingTensors):
        raise TypeError(f"sample: st must be a SamplingTensors (SamplingTensors.build), got {type(st).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"sample: logits must be [batch, vocab], got shape {tuple(logits.shape)}")
    if logits.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"sample: logits must be float32, float16 or bfloat16, got {logits.dtype}")
    rows, vocab = logits.shape
    if rows != st.batch or vocab != st.vocab_size:
        raise ValueError(f"sample: logits are [{rows}, {vocab}] but st was built for {st.batch} rows of vocab "
                         f"{st.vocab_size}; build it with the logits' batch and vocabulary size")
    if st.temperature.device != logits.device:
        raise ValueError(f"sample: st is on {st.temperature.device}, logits on {logits.device}")
    check_backend("triton", logits.device)  # a CPU tensor needs the interpreter: say so instead of crashing


def _batch_bucket(batch: int) -> int:
    # The autotuning key: one row (the whole GPU for one program), a few rows, many rows.
    return 0 if batch == 1 else 1 if batch <= 32 else 2


def sample(logits: torch.Tensor, st: SamplingTensors) -> SampleResult:
    """Draw one token per row honouring each row's parameters (see the module docstring for the math).

    Batches the split kernels handle (``_sampling_split.handles``: no top logprobs, every filtered row
    with a top-k of at most CAND_CHUNK) go there; the others to the row-wise kernel. Both draw the same
    tokens."""
    _check(logits, st)
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    if st.batch and handles(st):
        tokens, lps = launch_split(logits, st)
        return _read_back(tokens, lps, None, None)
    return _launch_rowwise(logits, st, None)


def sample_rowwise(logits: torch.Tensor, st: SamplingTensors) -> SampleResult:
    """``sample`` on the row-wise kernel alone (one program per row), for every batch."""
    return launch(logits, st)


def launch(logits: torch.Tensor, st: SamplingTensors, config: dict | None = None) -> SampleResult:
    """The row-wise kernel with an optional fixed config (one of ``CONFIGS``) instead of the autotuned one."""
    _check(logits, st)
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    return _launch_rowwise(logits, st, config)


def _launch_rowwise(logits: torch.Tensor, st: SamplingTensors, config: dict | None) -> SampleResult:
    B, V = logits.shape
    dev = logits.device
    width = st.max_logprobs or 0
    # One top-n width for every request size keeps the number of compiled variants small.
    topn = triton.next_power_of_2(MAX_LOGPROBS) if width else 0
    tokens = alloc.empty(B, dtype=torch.int64, device=dev)
    lps = alloc.empty(B, dtype=torch.float32, device=dev)
    status = torch.empty(B, dtype=torch.int32, device=dev)
    work = torch.empty(B, V, dtype=torch.float32, device=dev) if st.has_edits else lps
    top_ids = alloc.empty(B, width, dtype=torch.int64, device=dev) if width else tokens
    top_lp = alloc.empty(B, width, dtype=torch.float32, device=dev) if width else lps
    ties = torch.empty(B, topn, dtype=torch.int32, device=dev) if width else status
    cand = CAND_INTERPRETER if interpreting() else CAND_GPU
    cand_z = torch.empty(B, cand, dtype=torch.float32, device=dev)
    cand_idx = torch.empty(B, cand, dtype=torch.int32, device=dev)
    if B:
        kernel = _sample[(B,)] if config is None else _fixed(config, B)
        kernel(
            logits, work, logits.stride(0), V,
            st.temperature, st.top_p, st.min_p, st.repetition_penalty, st.presence_penalty,
            st.frequency_penalty, st.top_k, st.rng_key1, st.rng_key2, st.num_logprobs,
            st.edit_start, st.edit_token, st.edit_count, st.edit_in_context, st.edit_bias,
            tokens, lps, top_ids, top_lp, ties, cand_z, cand_idx, status, width, _batch_bucket(B),
            HAS_EDITS=st.has_edits, TOPN=topn, CAND=cand, MAX_PASSES=MAX_PASSES, EBLOCK=EBLOCK,
        )
    return _read_back(tokens, lps, top_ids if width else None, top_lp if width else None)


def _read_back(tokens, lps, top_ids, top_lp) -> SampleResult:
    # The kernels write token -1 for an invalid row: one read of the tokens both checks the rows and hands
    # them to the caller (the step's only wait for the device).
    host_tokens = tokens.tolist()
    raise_for_invalid("sample", host_tokens)
    return SampleResult(tokens, lps, top_ids, top_lp, host_tokens)


def _fixed(config: dict, batch: int):
    opts = {k: v for k, v in config.items() if k in ("num_warps", "num_stages")}
    meta = {k: v for k, v in config.items() if k not in opts}
    return lambda *args, **kwargs: _sample_kernel[(batch,)](*args, **kwargs, **meta, **opts)


# --- registration (inputs, the custom comparison and the benchmark cases live in _sampling_registration) ---

register(Op(
    name="sample",
    triton=sample,
    torch=sample_reference,
    baseline=sample_baseline,
    baseline_name="torch sort",
    **op_fields(),
))
register_impl("sample", "sample_rowwise", sample_rowwise)
