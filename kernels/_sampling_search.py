"""Triton building blocks of the sampling kernel: row loads, the counter-based noise, the threshold search.

All helpers work on one row of z = x / T (x: the logits after bias and penalties), streamed from memory
in blocks, so a row of any vocabulary size fits; each streaming pass reads the row once.

Noise. Token i of a row draws u_i = ((h_i >> 9) + 0.5) / 2^23 in (0, 1), with
h_i = mix32(mix32(i ^ key1) ^ key2) and (key1, key2) derived on the host from the row's (seed, step)
(``_sampling_params.rng_keys``). The Gumbel-max trick then samples exactly from softmax(z) restricted to a
kept set K: argmax_{i in K} z_i - log(-log u_i). The draw depends on nothing but (seed, step, i, z), so a
row samples the same token whatever else is in the batch, and the torch reference reproduces it.

Threshold search. Every filter keeps the tokens with z >= tau for some tau; top-k and top-p need the
largest token value v with F(v) >= target, where F(v) counts the tokens with z >= v (top-k: target k) or
sums their mass exp(z - m) (top-p: target p * F(lo)). F is non-increasing, so one pass evaluates F at NPIV
pivots spread over the bracket [lo, hi] at once, keeps the sub-bracket [p_a, p_a+1) that must hold the
answer, and snaps it to the data (smallest value >= p_a, largest value < p_a+1). A pass only does the
[SBLOCK, NPIV] work on blocks holding a value inside the bracket; tokens above it are counted in bulk. The
search ends when the bracket holds one distinct value (exact, ties included) or after MAX_PASSES passes
(then the lower end is used: a superset of the exact kept set; it takes a bracket wider than 30^MAX_PASSES
float steps, which real logits do not produce). The vocabulary is never sorted.
"""

from __future__ import annotations

from kernels._triton import tl, triton


@triton.jit
def _gumbel(offs, key1, key2):
    # Two rounds of a 32-bit xor-shift-multiply hash, written out: the interpreter pays per helper call.
    h = offs.to(tl.uint32) ^ key1
    h ^= h >> 16
    h *= 0x7FEB352D
    h ^= h >> 15
    h *= 0x846CA68B
    h ^= h >> 16
    h ^= key2
    h ^= h >> 16
    h *= 0x7FEB352D
    h ^= h >> 15
    h *= 0x846CA68B
    h ^= h >> 16
    u = ((h >> 9).to(tl.float32) + 0.5) * (1.0 / 8388608.0)
    return -tl.log(-tl.log(u))


@triton.jit
def _load_z(logits_ptr, work_ptr, row_l, row_w, offs, mask, from_work, inv_t):
    """z for the tokens ``offs`` of one row (masked lanes: -inf); edited rows read the fp32 workspace."""
    if from_work:
        x = tl.load(work_ptr + row_w + offs, mask=mask, other=float("-inf"))
    else:
        x = tl.load(logits_ptr + row_l + offs, mask=mask, other=float("-inf")).to(tl.float32)
    return x * inv_t


@triton.jit
def _patch_edits(logits_ptr, work_ptr, row_l, row_w, tok_lo, tok_hi, e0, e1, etok_ptr, ecnt_ptr, ectx_ptr, ebias_ptr,
                 rep, pres, freq, EBLOCK: tl.constexpr):
    """Write the row's edited logits (edits e0..e1 whose token lies in [tok_lo, tok_hi)) into the fp32
    workspace row: bias, then the repetition penalty on context tokens, then frequency and presence."""
    for es in range(e0, e1, EBLOCK):
        eo = es + tl.arange(0, EBLOCK)
        tok = tl.load(etok_ptr + eo, mask=eo < e1, other=-1)
        em = (eo < e1) & (tok >= tok_lo) & (tok < tok_hi)
        count = tl.load(ecnt_ptr + eo, mask=em, other=0).to(tl.float32)
        in_context = tl.load(ectx_ptr + eo, mask=em, other=0)
        x = tl.load(logits_ptr + row_l + tok, mask=em, other=0.0).to(tl.float32)
        x += tl.load(ebias_ptr + eo, mask=em, other=0.0)
        x = tl.where(in_context != 0, tl.where(x > 0, x / rep, x * rep), x)
        x = x - freq * count - tl.where(count > 0, pres, 0.0)
        tl.store(work_ptr + row_w + tok, x, mask=em)


@triton.jit
def _gumbel_argmax(logits_ptr, work_ptr, row_l, row_w, V, from_work, inv_t, tau, key1, key2,
                   BLOCK: tl.constexpr):
    """One pass: the token maximising z + Gumbel noise among tokens with z >= tau (ties: lowest index)."""
    best = tl.full([BLOCK], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK], tl.int32)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = _load_z(logits_ptr, work_ptr, row_l, row_w, offs, offs < V, from_work, inv_t)
        score = tl.where(z >= tau, z + _gumbel(offs, key1, key2), float("-inf"))
        better = score > best
        best_idx = tl.where(better, offs, best_idx)
        best = tl.where(better, score, best)
    top = tl.max(best, 0)
    return tl.min(tl.where(best == top, best_idx, V), 0)


@triton.jit
def _threshold_search(logits_ptr, work_ptr, row_l, row_w, V, from_work, inv_t, m, lo, hi,
                      target_abs, target_frac, enough,
                      USE_MASS: tl.constexpr, BLOCK: tl.constexpr, SBLOCK: tl.constexpr, NPIV: tl.constexpr,
                      MAX_PASSES: tl.constexpr):
    """The largest token value v in [lo, hi] with F(v) >= target.

    F counts tokens (``USE_MASS`` false) or sums exp(z - m) (true); target = max(target_abs,
    target_frac * F(lo)). Requires lo <= hi, both finite, and hi a token value. ``enough`` > 0 lets the
    search stop early at a token value v with target <= F(v) <= enough (a lower bound on the answer that
    keeps at most ``enough``); pass 0 for the exact answer.

    A pass streams the row in BLOCK chunks and reduces once per chunk (does it touch the bracket?);
    chunks that do are re-read in SBLOCK pieces; a piece that touches it too (one reduction decides)
    accumulates its per-pivot statistics per lane in [SBLOCK, NPIV] registers, reduced once at the end of
    the pass. After the first pass the bracket is narrow and most pieces skip the [SBLOCK, NPIV] work.
    """
    j = tl.arange(0, NPIV)
    frac = j.to(tl.float32) / (NPIV - 1)
    lo = lo.to(tl.float32)
    hi = hi.to(tl.float32)
    target = tl.zeros([], tl.float32) + target_abs
    ans = lo
    done = tl.zeros([], tl.int32)
    for p in range(MAX_PASSES):
        if done == 0:
            piv = tl.where(j == NPIV - 1, hi, tl.where(j == 0, lo, lo + (hi - lo) * frac))
            cnt2 = tl.zeros([SBLOCK, NPIV], tl.float32)
            mass2 = tl.zeros([SBLOCK, NPIV], tl.float32)  # stays zero when counting
            mn2 = tl.full([SBLOCK, NPIV], float("inf"), tl.float32)
            mx2 = tl.full([SBLOCK, NPIV], float("-inf"), tl.float32)
            cnt_above = tl.zeros([BLOCK], tl.float32)
            mass_above = tl.zeros([BLOCK], tl.float32)
            for start in range(0, V, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                z = _load_z(logits_ptr, work_ptr, row_l, row_w, offs, offs < V, from_work, inv_t)
                above = z > hi
                cnt_above += above.to(tl.float32)
                if USE_MASS:
                    mass_above += tl.where(above, tl.exp(z - m), 0.0)
                if tl.max(((z >= lo) & (z <= hi)).to(tl.int32), 0) > 0:
                    for sub in tl.static_range(0, BLOCK, SBLOCK):
                        so = start + sub + tl.arange(0, SBLOCK)
                        zs = _load_z(logits_ptr, work_ptr, row_l, row_w, so, so < V, from_work, inv_t)
                        inside = (zs >= lo) & (zs <= hi)
                        if tl.max(inside.to(tl.int32), 0) > 0:  # once the bracket is narrow, most pieces skip
                            zin = tl.where(inside, zs, float("-inf"))[:, None]
                            ge = zin >= piv[None, :]
                            cnt2 += ge.to(tl.float32)
                            if USE_MASS:
                                mass2 += tl.where(ge, tl.exp(zin - m), 0.0)
                            mn2 = tl.minimum(mn2, tl.where(ge, zin, float("inf")))
                            mx2 = tl.maximum(mx2, tl.where(ge, float("-inf"), zin))
            cnt = tl.sum(cnt2, 0) + tl.sum(cnt_above, 0)
            mass = tl.sum(mass2, 0) + tl.sum(mass_above, 0)
            mn = tl.min(mn2, 0)
            mx = tl.max(mx2, 0)
            f_at = mass if USE_MASS else cnt
            if p == 0:
                target = tl.maximum(target, target_frac * tl.sum(tl.where(j == 0, f_at, 0.0), 0))
            a = tl.max(tl.where(f_at >= target, j, -1), 0)
            a_safe = tl.maximum(a, 0)
            mn_a = tl.sum(tl.where(j == a_safe, mn, 0.0), 0)
            mx_next = tl.sum(tl.where(j == a_safe + 1, mx, 0.0), 0)
            reached_top = a == NPIV - 1
            ans = tl.where(reached_top, hi, tl.where(a < 0, lo, mn_a))
            f_a = tl.sum(tl.where(j == a_safe, f_at, 0.0), 0)
            if reached_top | (a < 0) | (mn_a >= mx_next) | (f_a <= enough):
                done = 1
            else:
                lo = mn_a
                hi = mx_next
    return ans


@triton.jit
def _gather_candidates(logits_ptr, work_ptr, row_l, row_w, V, from_work, inv_t, tau, cz_ptr, ci_ptr, row_c,
                       BLOCK: tl.constexpr, CAND: tl.constexpr):
    """Copy the tokens with z >= tau, in index order, to the row's candidate buffers (at most CAND of
    them); return how many there are (possibly more than CAND: then the buffers are incomplete)."""
    count = tl.zeros([], tl.int32)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = _load_z(logits_ptr, work_ptr, row_l, row_w, offs, offs < V, from_work, inv_t)
        keep = (z >= tau).to(tl.int32)
        found = tl.sum(keep, 0)
        if found > 0:
            pos = count + tl.cumsum(keep, 0) - 1
            ok = (keep != 0) & (pos < CAND)
            tl.store(cz_ptr + row_c + pos, z, mask=ok)
            tl.store(ci_ptr + row_c + pos, offs, mask=ok)
        count += found
    return count


@triton.jit
def _draw_from_candidates(cz_ptr, ci_ptr, row_c, count, tau, key1, key2, CAND: tl.constexpr):
    """The Gumbel-max draw over the gathered candidates with z >= tau: the token a full-row draw picks."""
    jj = tl.arange(0, CAND)
    valid = jj < count
    z = tl.load(cz_ptr + row_c + jj, mask=valid, other=float("-inf"))
    idx = tl.load(ci_ptr + row_c + jj, mask=valid, other=0)
    score = tl.where(valid & (z >= tau), z + _gumbel(idx, key1, key2), float("-inf"))
    best = tl.max(score, 0)
    # Candidates sit in index order, so the lowest index among equal scores is the full draw's choice.
    return tl.min(tl.where(valid & (score == best), idx, 2147483647), 0)
