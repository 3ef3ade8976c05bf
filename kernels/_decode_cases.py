"""Registration data for paged_decode_attention: test cases, inputs, benchmark sweep, FLOP/byte model.

A case is a dict: per-sequence ``context_lens``, ``q_heads``, ``kv_heads``, ``head_dim``, ``block_size``,
``dtype``, ``num_splits`` (None: the kernel chooses), ``pass_max`` (hand max_context_len to the op) and
``layout``: "shuffled" (blocks in random order, spare table entries pointing at other blocks) or
"contiguous" (the benchmark layout that SDPA can read as a plain tensor: ``decode_sdpa_baseline``).
Benchmark cases, where every sequence has one length, say ``batch`` and ``context`` instead (shorter to
print).
"""

from __future__ import annotations

import torch

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        length, dims, batch, blocks = st.sampled_from([1, 15, 16, 17, 31, 33, 70]), \
            st.sampled_from([16, 32, 64]), 3, st.sampled_from([16, 32])
        heads = st.sampled_from([(2, 1), (4, 4), (8, 1), (6, 2), (3, 3), (5, 1)])
        splits = st.sampled_from([None, 1, 2, 3])
    else:
        length, dims, batch, blocks = st.sampled_from([1, 15, 16, 17, 127, 128, 129, 1000, 4097, 9000]), \
            st.sampled_from([64, 80, 96, 128, 256]), 9, st.sampled_from([16, 32, 128, 256])
        heads = st.sampled_from([(32, 8), (14, 2), (8, 8), (28, 4), (16, 2), (12, 2), (8, 1)])
        splits = st.sampled_from([None, None, 1, 3, 16])

    @st.composite
    def case(draw):
        n = draw(st.integers(1, batch))
        q_heads, kv_heads = draw(heads)
        return {
            "context_lens": tuple(draw(st.lists(length, min_size=n, max_size=n))),
            "q_heads": q_heads, "kv_heads": kv_heads, "head_dim": draw(dims), "block_size": draw(blocks),
            "dtype": draw(st.sampled_from(DTYPES)), "num_splits": draw(splits), "pass_max": draw(st.booleans()),
            "layout": "shuffled",
        }

    return case()


def context_lens_of(case) -> tuple[int, ...]:
    return tuple(case["context_lens"]) if "context_lens" in case else (case["context"],) * case["batch"]


def make_inputs(case, device, gen):
    ctx = context_lens_of(case)
    Hq, Hkv, D, bs, dt = (case[k] for k in ("q_heads", "kv_heads", "head_dim",
                                                 "block_size", "dtype"))
    B = len(ctx)
    need = [-(-n // bs) for n in ctx]
    if case.get("layout") == "contiguous":
        width = max(need)
        num_blocks = B * width
        table = torch.arange(num_blocks, device=device).view(B, width)
    else:
        width = max(need) + 1
        num_blocks = sum(need) + 2
        perm = torch.randperm(num_blocks, generator=gen, device=device)
        table = torch.randint(0, num_blocks, (B, width), generator=gen, device=device)
        start = 0
        for b, n in enumerate(need):
            table[b, :n] = perm[start:start + n]
            start += n
    shape = (num_blocks, bs, Hkv, D)
    inputs = {
        "q": torch.randn(B, Hq, D, generator=gen, device=device).to(dt),
        "k_cache": torch.randn(*shape, generator=gen, device=device).to(dt),
        "v_cache": torch.randn(*shape, generator=gen, device=device).to(dt),
        "block_tables": table.to(torch.int32),
        "context_lens": torch.tensor(ctx, dtype=torch.int32, device=device),
    }
    if case.get("num_splits") is not None:
        inputs["num_splits"] = case["num_splits"]
    if case.get("pass_max", True):
        inputs["max_context_len"] = max(ctx)
    return inputs


def smoke_cases():
    return [
        {"context_lens": (1, 33, 16), "q_heads": 4, "kv_heads": 2, "head_dim": 32, "block_size": 16, "dtype": dt,
         "num_splits": splits, "pass_max": True, "layout": "shuffled"}
        for dt in DTYPES for splits in (None, 3)
    ]


# Real decode shapes: Llama-3-8B (32 q / 8 kv heads) and Qwen2.5-1.5B (12 q / 2 kv) style GQA.
BENCH_HEADS = ((32, 8), (14, 2))
MAX_BENCH_TOKENS = 1 << 20  # batch * context: keeps the largest case's KV (4 GiB at 32/8) in memory


def bench_cases():
    out = []
    for Hq, Hkv in BENCH_HEADS:
        for bs in (16, 128):
            for batch in (1, 8, 64, 256):
                for ctx in (512, 1024, 4096, 8192, 16384, 32768):
                    if batch * ctx > MAX_BENCH_TOKENS:
                        continue
                    out.append({"batch": batch, "context": ctx, "q_heads": Hq, "kv_heads": Hkv, "head_dim": 128,
                                "block_size": bs, "dtype": torch.bfloat16, "num_splits": None, "pass_max": True,
                                "layout": "contiguous"})
    return out


def reduction_len(case):
    return max(context_lens_of(case))


def flops(case):
    return 4.0 * case["head_dim"] * case["q_heads"] * sum(context_lens_of(case))


def bytes_moved(case):
    """KV bytes read, plus q read and o written (the block table is noise)."""
    e, D = case["dtype"].itemsize, case["head_dim"]
    ctx = context_lens_of(case)
    return e * D * (2 * case["kv_heads"] * sum(ctx) + 2 * len(ctx) * case["q_heads"])


def decode_sdpa_baseline(q, k_cache, v_cache, block_tables, context_lens, scale=None, max_context_len=None,
                         num_splits=None, split_size=None):
    """torch SDPA on the same KV laid out contiguously, as in the benchmark cases.

    Valid only for the benchmark layout: sequence b owns blocks b*n .. b*n+n-1 in order and every
    context has max_context_len tokens (the table's capacity if it is not given), so the cache *is* a
    contiguous [B, n*block_size, Hkv, D] tensor, sliced to the context (a view, no copy).
    """
    batch, q_heads, D = q.shape
    num_blocks, _, kv_heads, _ = k_cache.shape
    if num_blocks != batch * block_tables.shape[1]:
        raise ValueError("decode_sdpa_baseline needs the benchmark layout (cache blocks == batch * table width)")
    length = block_tables.shape[1] * k_cache.shape[1] if max_context_len is None else max_context_len
    dense = lambda c: c.view(batch, -1, kv_heads, D)[:, :length].transpose(1, 2)
    o = torch.nn.functional.scaled_dot_product_attention(
        q[:, :, None, :], dense(k_cache), dense(v_cache), scale=scale, enable_gqa=kv_heads != q_heads)
    return o[:, :, 0, :]
