"""Sampling with each row split over the GPU: one program per chunk of CHUNK tokens, then one per row.

The row-wise kernel (``kernels/sampling.py``) gives a row one program, which walks the whole vocabulary
pass after pass. A batch of a few rows then leaves most of the GPU idle and every pass is bound by one
SM: on an H200 a top-k/top-p row of 151936 tokens took 690-790 us (bench/results/NVIDIA_H200/run5_notes.md).
Here the same math (the module docstring of ``kernels/sampling.py``) runs in two stages:

    stage 1, program (b, c), chunk c of row b, z = x / T after bias and penalties:
        m_c = max z,  a_c = lowest index attaining it,  s_c = sum exp(z - m_c),  zmin_c,  bad_c (NaN, +inf);
        sampled rows without filters:  the chunk's best Gumbel score g_c and its token;
        rows with a top-k:  t_c, a value with k <= n_c <= min(2k, CAND_CHUNK) of the chunk's tokens at or
                            above it (the pivot search on CHUNK tokens, stopped at the first pivot that
                            gives one; at most k..k when 2k > CAND_CHUNK; ties may exceed it), and those
                            n_c tokens, in index order.
    stage 2, program b:
        M = max m_c,  lse = M + log sum_c s_c exp(m_c - M),  greedy token = min{a_c : m_c = M};
        unfiltered: the token of max g_c (ties: lowest index);
        top-k:  L = max{t_c : n_c >= k} is at most the row's k-th largest value v_k (that chunk alone
                holds k tokens >= L), so every token the filters keep (z >= v_k, or more) is a chunk
                candidate >= L, and a chunk holds at most its n_c of them. Gather those (index order),
                then v_k, min-p, top-p and the Gumbel draw run on them as the row-wise kernel runs them
                on its candidates: the same token, bit for bit.
        A row whose candidates do not fit (a chunk with more than CAND_CHUNK tokens tied at its t_c, or
        more than CAND_ROW gathered) finishes on its whole row exactly as the row-wise kernel does.

Rows asking for top logprobs, and filtered rows without a top-k (or with one above CAND_CHUNK), are not
handled here: ``sample`` sends such batches to the row-wise kernel.
Bytes: stage 1 reads each logit once (twice for edited rows, which go through the fp32 workspace);
stage 2 reads a few partials and candidates per chunk.
"""

from __future__ import annotations

import threading

import torch

from kernels import alloc
from kernels._sampling_params import SamplingTensors
from kernels._sampling_search import (
    _draw_from_candidates,
    _gumbel,
    _gumbel_argmax,
    _load_z,
    _patch_edits,
    _threshold_search,
)
from kernels._triton import tl, triton
from kernels.device import interpreting, vendor

# --- stage 1: one program per chunk ------------------------------------------------------------------


# Per-row parameter pointers are slices of one packed buffer whose alignment moves with the batch.
@triton.jit(do_not_specialize=[
    "temp_ptr", "topp_ptr", "minp_ptr", "rep_ptr", "pres_ptr", "freq_ptr", "topk_ptr", "key1_ptr", "key2_ptr",
    "estart_ptr", "etok_ptr", "ecnt_ptr", "ectx_ptr", "ebias_ptr", "P"])
def _chunk_kernel(
    logits_ptr, work_ptr, stride_l, V,
    temp_ptr, topp_ptr, minp_ptr, rep_ptr, pres_ptr, freq_ptr, topk_ptr, key1_ptr, key2_ptr,
    estart_ptr, etok_ptr, ecnt_ptr, ectx_ptr, ebias_ptr,
    pm_ptr, ps_ptr, pa_ptr, pmin_ptr, pbad_ptr, pg_ptr, pgi_ptr, pthr_ptr, pn_ptr, cz_ptr, ci_ptr, P,
    HAS_EDITS: tl.constexpr, CHUNK: tl.constexpr, SBLOCK: tl.constexpr, NPIV: tl.constexpr,
    CAND_CHUNK: tl.constexpr, MAX_PASSES: tl.constexpr, EBLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    c = tl.program_id(1)
    start = c * CHUNK
    row_l = row.to(tl.int64) * stride_l
    row_w = row.to(tl.int64) * V
    offs = start + tl.arange(0, CHUNK)
    inside = offs < V
    temperature = tl.load(temp_ptr + row)
    top_k = tl.load(topk_ptr + row)

    if HAS_EDITS:
        e0 = tl.load(estart_ptr + row)
        e1 = tl.load(estart_ptr + row + 1)
        from_work = e1 > e0
        if from_work:  # this chunk of the row to the workspace, then the row's edits that fall in it
            x = tl.load(logits_ptr + row_l + offs, mask=inside).to(tl.float32)
            tl.store(work_ptr + row_w + offs, x, mask=inside)
            tl.debug_barrier()
            _patch_edits(logits_ptr, work_ptr, row_l, row_w, start, start + CHUNK, e0, e1, etok_ptr, ecnt_ptr,
                         ectx_ptr, ebias_ptr, tl.load(rep_ptr + row), tl.load(pres_ptr + row),
                         tl.load(freq_ptr + row), EBLOCK)
            tl.debug_barrier()
    else:
        from_work = False

    greedy = temperature == 0.0
    inv_t = 1.0 / tl.where(greedy, 1.0, temperature)
    z = _load_z(logits_ptr, work_ptr, row_l, row_w, offs, inside, from_work, inv_t)
    bad = tl.max(((z != z) | (z == float("inf"))).to(tl.int32), 0)
    m = tl.max(z, 0)
    m_ref = tl.where(m == float("-inf"), 0.0, m)
    out = row.to(tl.int64) * P + c
    tl.store(pm_ptr + out, m)
    tl.store(pa_ptr + out, tl.min(tl.where(z == m, offs, V), 0))
    tl.store(ps_ptr + out, tl.sum(tl.exp(z - m_ref), 0))
    tl.store(pmin_ptr + out, tl.min(tl.where(z > float("-inf"), z, float("inf")), 0))
    tl.store(pbad_ptr + out, bad)

    unfiltered = (top_k == 0) & (tl.load(topp_ptr + row) >= 1.0) & (tl.load(minp_ptr + row) <= 0.0)
    if (temperature > 0.0) & unfiltered:
        key1 = tl.load(key1_ptr + row).to(tl.uint32, bitcast=True)
        key2 = tl.load(key2_ptr + row).to(tl.uint32, bitcast=True)
        score = z + _gumbel(offs, key1, key2)  # -inf outside the vocabulary and at -inf logits
        best = tl.max(score, 0)
        tl.store(pg_ptr + out, best)
        tl.store(pgi_ptr + out, tl.min(tl.where(score == best, offs, V), 0))
    if (temperature > 0.0) & (top_k > 0):
        thr = tl.full([], float("inf"), tl.float32)
        if (m > float("-inf")) & (bad == 0):
            zmin = tl.min(tl.where(z > float("-inf"), z, float("inf")), 0)
            # Any value with k..enough tokens at or above it bounds the row's k-th value as well as the
            # chunk's exact k-th value does: the search stops at the first pivot that gives one.
            enough = tl.maximum(top_k, tl.minimum(2 * top_k, CAND_CHUNK))
            thr = _threshold_search(logits_ptr, work_ptr, row_l + start, row_w + start,
                                    tl.minimum(V - start, CHUNK), from_work, inv_t, m, zmin, m, top_k, 0.0, enough,
                                    False, CHUNK, SBLOCK, NPIV, MAX_PASSES)
        keep = (z >= thr).to(tl.int32)
        pos = tl.cumsum(keep, 0) - 1
        slot = out * CAND_CHUNK + pos
        tl.store(cz_ptr + slot, z, mask=(keep != 0) & (pos < CAND_CHUNK))
        tl.store(ci_ptr + slot, offs, mask=(keep != 0) & (pos < CAND_CHUNK))
        tl.store(pthr_ptr + out, thr)
        tl.store(pn_ptr + out, tl.sum(keep, 0))


# --- stage 2: one program per row ----------------------------------------------------------------------


@triton.jit(do_not_specialize=[
    "temp_ptr", "topp_ptr", "minp_ptr", "topk_ptr", "key1_ptr", "key2_ptr", "estart_ptr", "P"])
def _finish_kernel(
    logits_ptr, work_ptr, stride_l, V,
    temp_ptr, topp_ptr, minp_ptr, topk_ptr, key1_ptr, key2_ptr, estart_ptr,
    pm_ptr, ps_ptr, pa_ptr, pmin_ptr, pbad_ptr, pg_ptr, pgi_ptr, pthr_ptr, pn_ptr, cz_ptr, ci_ptr,
    rz_ptr, ri_ptr, token_ptr, lp_ptr, P,
    HAS_EDITS: tl.constexpr, PBLOCK: tl.constexpr, CGROUP: tl.constexpr, CAND_CHUNK: tl.constexpr,
    CAND_ROW: tl.constexpr, BLOCK: tl.constexpr, SBLOCK: tl.constexpr, NPIV: tl.constexpr, MAX_PASSES: tl.constexpr,
):
    row = tl.program_id(0)
    row_l = row.to(tl.int64) * stride_l
    row_w = row.to(tl.int64) * V
    base = row.to(tl.int64) * P
    pp = tl.arange(0, PBLOCK)
    pv = pp < P
    m_c = tl.load(pm_ptr + base + pp, mask=pv, other=float("-inf"))
    mx = tl.max(m_c, 0)
    bad = tl.max(tl.load(pbad_ptr + base + pp, mask=pv, other=0), 0)
    if (bad > 0) | (mx == float("-inf")):
        tl.store(token_ptr + row, -1)  # the launcher raises, naming the row
        return
    s_c = tl.load(ps_ptr + base + pp, mask=pv, other=0.0)
    lse = mx + tl.log(tl.sum(tl.where(m_c > float("-inf"), s_c * tl.exp(m_c - mx), 0.0), 0))
    zmin = tl.min(tl.load(pmin_ptr + base + pp, mask=pv, other=float("inf")), 0)

    temperature = tl.load(temp_ptr + row)
    top_p = tl.load(topp_ptr + row)
    min_p = tl.load(minp_ptr + row)
    top_k = tl.load(topk_ptr + row)
    key1 = tl.load(key1_ptr + row).to(tl.uint32, bitcast=True)
    key2 = tl.load(key2_ptr + row).to(tl.uint32, bitcast=True)
    if HAS_EDITS:  # noqa: SIM108  (a compile-time branch, kept as a statement)
        from_work = tl.load(estart_ptr + row + 1) > tl.load(estart_ptr + row)
    else:
        from_work = False
    greedy = temperature == 0.0
    inv_t = 1.0 / tl.where(greedy, 1.0, temperature)
    unfiltered = (top_k == 0) & (top_p >= 1.0) & (min_p <= 0.0)

    if greedy:
        token = tl.min(tl.where(m_c == mx, tl.load(pa_ptr + base + pp, mask=pv, other=V), V), 0)
    elif unfiltered:
        g = tl.load(pg_ptr + base + pp, mask=pv, other=float("-inf"))
        token = tl.min(tl.where(g == tl.max(g, 0), tl.load(pgi_ptr + base + pp, mask=pv, other=V), V), 0)
    else:
        tau = tl.where(min_p > 0.0, mx + tl.log(tl.maximum(min_p, 1e-30)), float("-inf"))
        n_c = tl.load(pn_ptr + base + pp, mask=pv, other=0)
        bound = tl.max(tl.where(n_c >= top_k, tl.load(pthr_ptr + base + pp, mask=pv, other=float("-inf")),
                            float("-inf")), 0)
        bound = tl.where(bound == float("-inf"), zmin, bound)  # no chunk holds k tokens: every finite token counts
        # A chunk that could not write all its candidates and holds tokens >= bound: the gather is incomplete.
        count = tl.where(tl.max(((n_c > CAND_CHUNK) & (m_c >= bound)).to(tl.int32), 0) > 0, CAND_ROW + 1, 0)
        row_c = row.to(tl.int64) * CAND_ROW
        jj = tl.arange(0, CAND_CHUNK)
        if count == 0:  # the chunks' candidates >= bound, CGROUP chunks at a time, in index order
            for g0 in range(0, P, CGROUP):
                cc = g0 + tl.arange(0, CGROUP)
                n = tl.minimum(tl.load(pn_ptr + base + cc, mask=cc < P, other=0), CAND_CHUNK)
                live = (cc < P) & (tl.load(pm_ptr + base + cc, mask=cc < P, other=float("-inf")) >= bound)
                take = live[:, None] & (jj[None, :] < n[:, None])
                slot = (base + cc)[:, None] * CAND_CHUNK + jj[None, :]
                z = tl.reshape(tl.load(cz_ptr + slot, mask=take, other=float("-inf")), [CGROUP * CAND_CHUNK])
                idx = tl.reshape(tl.load(ci_ptr + slot, mask=take, other=0), [CGROUP * CAND_CHUNK])
                keep = (z >= bound).to(tl.int32)
                pos = count + tl.cumsum(keep, 0) - 1
                ok = (keep != 0) & (pos < CAND_ROW)
                tl.store(rz_ptr + row_c + pos, z, mask=ok)
                tl.store(ri_ptr + row_c + pos, idx, mask=ok)
                count += tl.sum(keep, 0)
            tl.debug_barrier()  # the gathered candidates were written by other threads of this program
        if count <= CAND_ROW:
            v_k = _threshold_search(logits_ptr, rz_ptr, row_l, row_c, count, True, 1.0, mx, bound, mx,
                                    top_k, 0.0, 0, False, CAND_ROW, SBLOCK, NPIV, MAX_PASSES)
            tau = tl.maximum(tau, v_k)
            if top_p < 1.0:
                tau = _threshold_search(logits_ptr, rz_ptr, row_l, row_c, count, True, 1.0, mx, tau, mx,
                                        0.0, top_p, 0, True, CAND_ROW, SBLOCK, NPIV, MAX_PASSES)
            token = _draw_from_candidates(rz_ptr, ri_ptr, row_c, count, tau, key1, key2, CAND_ROW)
        else:  # the whole row, as the row-wise kernel does it
            v_k = _threshold_search(logits_ptr, work_ptr, row_l, row_w, V, from_work, inv_t, mx, zmin, mx,
                                    top_k, 0.0, 0, False, BLOCK, SBLOCK, NPIV, MAX_PASSES)
            tau = tl.maximum(tau, v_k)
            if top_p < 1.0:
                tau = _threshold_search(logits_ptr, work_ptr, row_l, row_w, V, from_work, inv_t, mx,
                                        tl.maximum(tau, zmin), mx, 0.0, top_p, 0, True, BLOCK, SBLOCK, NPIV, MAX_PASSES)
            token = _gumbel_argmax(logits_ptr, work_ptr, row_l, row_w, V, from_work, inv_t, tau, key1, key2, BLOCK)
    tl.store(token_ptr + row, token.to(tl.int64))
    z_tok = _load_z(logits_ptr, work_ptr, row_l, row_w, token, token < V, from_work, inv_t)
    tl.store(lp_ptr + row, z_tok - lse)


# --- configs (data), chosen at first launch --------------------------------------------------------------

CONFIGS = {
    # MAX_ROWS: a larger batch fills the GPU with one program per row and takes the row-wise kernel (on an
    # H200 the split path won at every batch from 16 to 192 and tied at 256: run5_notes.md).
    # CHUNK tokens per stage-1 program (19 programs per row at V=151936; on an H200, 8192 tokens with 16
    # warps beat 4096 and 2048 at batch 64 and tied at batch 1), its pivot search's SBLOCK and NPIV,
    # stage 2's gather (CGROUP chunks' candidate buffers at a time) and its whole-row fallback BLOCK.
    # The interpreter's chunks are small so that CPU tests with small vocabularies cross several chunks
    # and fill and overflow the candidate buffers.
    "cuda": dict(MAX_ROWS=256, CHUNK=8192, SBLOCK=512, NPIV=16, CAND_CHUNK=256, CAND_ROW=2048, CGROUP=8,
                 BLOCK=2048, num_warps=16, finish_warps=8),
    "hip": dict(MAX_ROWS=128, CHUNK=4096, SBLOCK=256, NPIV=16, CAND_CHUNK=256, CAND_ROW=2048, CGROUP=8,
                BLOCK=2048, num_warps=8, finish_warps=8),
    "interpreter": dict(MAX_ROWS=1 << 30, CHUNK=64, SBLOCK=32, NPIV=8, CAND_CHUNK=16, CAND_ROW=128, CGROUP=2,
                        BLOCK=64, num_warps=1, finish_warps=1),
}
MAX_PASSES = 8
EBLOCK = 128


def config() -> dict:
    """The running backend's config (read at launch, never at import)."""
    return CONFIGS["interpreter" if interpreting() else vendor()]


def handles(st: SamplingTensors) -> bool:
    """True when the batch has at most MAX_ROWS rows, each one the split kernels finish (greedy, sampled
    without filters, or filtered with a top-k of at most CAND_CHUNK), and no row asks for top logprobs."""
    cfg = config()
    return (st.batch <= cfg["MAX_ROWS"] and not st.max_logprobs and st.candidate_bound is not None
            and st.candidate_bound <= cfg["CAND_CHUNK"])


class _Buffers(threading.local):
    """Scratch of the split kernels, kept per (thread, device, chunks per row, buffer sizes) and grown by
    doubling the rows: a step allocates only its two outputs. Rows past the batch are never read. Per
    thread, so that two threads sampling at once never share a launch pair's partials; the buffers are
    internal (results never alias them)."""

    def __init__(self):
        self.by_key: dict = {}

    def get(self, key, rows: int, make):
        held = self.by_key.get(key)
        if held is None or held[0] < rows:
            cap = max(rows, 2 * held[0]) if held is not None else triton.next_power_of_2(rows)
            held = (cap, make(cap))
            self.by_key[key] = held
        return held[1]


_BUFFERS = _Buffers()


def _scratch(dev, B: int, P: int, cfg: dict) -> tuple:
    cc, cr = cfg["CAND_CHUNK"], cfg["CAND_ROW"]

    def make(rows: int) -> tuple:
        part_f = torch.empty(5, rows, P, dtype=torch.float32, device=dev)  # max, sum, min, Gumbel best, threshold
        part_i = torch.empty(4, rows, P, dtype=torch.int32, device=dev)    # argmax, bad, Gumbel token, candidates
        return (*part_f.unbind(), *part_i.unbind(),
                torch.empty(rows, P, cc, dtype=torch.float32, device=dev),
                torch.empty(rows, P, cc, dtype=torch.int32, device=dev),
                torch.empty(rows, cr, dtype=torch.float32, device=dev),
                torch.empty(rows, cr, dtype=torch.int32, device=dev))

    return _BUFFERS.get((dev, P, cc, cr), B, make)


def _workspace(dev, B: int, V: int) -> torch.Tensor:
    """The fp32 rows edited logits are written to (bias, penalties): [B, V] or larger, contiguous rows."""
    return _BUFFERS.get((dev, "work", V), B, lambda rows: torch.empty(rows, V, dtype=torch.float32, device=dev))


def launch_split(logits: torch.Tensor, st: SamplingTensors) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [B] and their logprobs [B] on the device (token -1 marks an invalid row). The caller has
    checked the inputs and ``handles(st)``; ``logits`` is [B, V] with unit stride along V."""
    cfg = config()
    B, V = logits.shape
    dev = logits.device
    chunk, cand_chunk, cand_row = cfg["CHUNK"], cfg["CAND_CHUNK"], cfg["CAND_ROW"]
    P = triton.cdiv(V, chunk)
    tokens = alloc.empty(B, dtype=torch.int64, device=dev)
    lps = alloc.empty(B, dtype=torch.float32, device=dev)
    pm, ps, pmin, pg, pthr, pa, pbad, pgi, pn, cand_z, cand_i, row_z, row_i = _scratch(dev, B, P, cfg)
    work = _workspace(dev, B, V) if st.has_edits else lps
    _chunk_kernel[(B, P)](
        logits, work, logits.stride(0), V,
        st.temperature, st.top_p, st.min_p, st.repetition_penalty, st.presence_penalty, st.frequency_penalty,
        st.top_k, st.rng_key1, st.rng_key2,
        st.edit_start, st.edit_token, st.edit_count, st.edit_in_context, st.edit_bias,
        pm, ps, pa, pmin, pbad, pg, pgi, pthr, pn, cand_z, cand_i, P,
        HAS_EDITS=st.has_edits, CHUNK=chunk, SBLOCK=cfg["SBLOCK"], NPIV=cfg["NPIV"], CAND_CHUNK=cand_chunk,
        MAX_PASSES=MAX_PASSES, EBLOCK=EBLOCK, num_warps=cfg["num_warps"],
    )
    _finish_kernel[(B,)](
        logits, work, logits.stride(0), V,
        st.temperature, st.top_p, st.min_p, st.top_k, st.rng_key1, st.rng_key2, st.edit_start,
        pm, ps, pa, pmin, pbad, pg, pgi, pthr, pn, cand_z, cand_i, row_z, row_i, tokens, lps, P,
        HAS_EDITS=st.has_edits, PBLOCK=triton.next_power_of_2(P), CGROUP=cfg["CGROUP"], CAND_CHUNK=cand_chunk,
        CAND_ROW=cand_row,
        BLOCK=cfg["BLOCK"], SBLOCK=cfg["SBLOCK"], NPIV=cfg["NPIV"], MAX_PASSES=MAX_PASSES,
        num_warps=cfg["finish_warps"],
    )
    return tokens, lps


__all__ = ["CONFIGS", "handles", "launch_split"]
