"""Registration data for prefill_attention: test cases, inputs, the benchmark sweep, FLOP/byte model.

A case is a dict: per-sequence chunk lengths ``seqlens`` and cached ``prefixes`` (None: no cache),
``q_heads``, ``kv_heads``, ``head_dim``, ``block_size``, ``dtype`` and ``causal``. Benchmark cases, where
every sequence has one length, say ``batch``, ``seqlen`` and ``prefix`` instead (shorter to print).
"""

from __future__ import annotations

import torch

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        # Lengths around the interpreter's 16-wide tiles and a 16-token cache block.
        length, dims, batch = st.sampled_from([1, 7, 15, 16, 17, 33]), st.sampled_from([16, 32, 64]), 3
        heads = st.sampled_from([(2, 1), (2, 2), (4, 1), (3, 1)])
    else:
        length, dims, batch = st.sampled_from([1, 63, 64, 65, 127, 128, 129, 500, 1024, 2000]), \
            st.sampled_from([64, 80, 96, 128, 256]), 6
        heads = st.sampled_from([(8, 8), (16, 2), (14, 2), (32, 8), (12, 4), (8, 1), (28, 4)])

    @st.composite
    def case(draw):
        n = draw(st.integers(1, batch))
        seqlens = tuple(draw(st.lists(length, min_size=n, max_size=n)))
        prefixes = None
        if draw(st.booleans()):
            prefixes = tuple(draw(st.lists(st.sampled_from([0, 1, 15, 16, 17, 40, 300]), min_size=n, max_size=n)))
        q_heads, kv_heads = draw(heads)
        return {
            "seqlens": seqlens, "prefixes": prefixes, "q_heads": q_heads, "kv_heads": kv_heads,
            "head_dim": draw(dims), "block_size": draw(st.sampled_from([16, 32] if profile == "cpu" else [16, 128])),
            "dtype": draw(st.sampled_from(DTYPES)), "causal": draw(st.booleans()),
        }

    return case()


def seqlens_of(case) -> tuple[int, ...]:
    return tuple(case["seqlens"]) if "seqlens" in case else (case["seqlen"],) * case["batch"]


def prefixes_of(case) -> tuple[int, ...] | None:
    if "seqlens" in case:
        return case.get("prefixes")
    return (case["prefix"],) * case["batch"] if case.get("prefix") else None


def make_inputs(case, device, gen):
    seqlens, Hq, Hkv, D, dt = seqlens_of(case), case["q_heads"], case["kv_heads"], case["head_dim"], case["dtype"]
    T = sum(seqlens)
    rand = lambda *shape: torch.randn(*shape, generator=gen, device=device).to(dt)
    cu = torch.tensor([0, *torch.tensor(seqlens).cumsum(0).tolist()], dtype=torch.int32, device=device)
    inputs = {
        "q": rand(T, Hq, D), "k": rand(T, Hkv, D), "v": rand(T, Hkv, D),
        "cu_seqlens": cu, "max_seqlen": max(seqlens), "causal": case["causal"],
    }
    if prefixes_of(case) is not None:
        # Benchmark cases fill each table row exactly (the SDPA baseline reads the prefix length off it).
        inputs.update(paged_prefix(prefixes_of(case), case["block_size"], Hkv, D, dt, device, gen,
                                   exact="seqlens" not in case))
    return inputs


def paged_prefix(prefixes, block_size, kv_heads, head_dim, dtype, device, gen, exact=False):
    """A random paged cache holding each sequence's prefix in shuffled blocks.

    Table entries past a prefix point at other (random) blocks, so reading past the prefix gives a
    wrong answer rather than a lucky one. With ``exact`` every table row is filled by its prefix.
    """
    need = [-(-p // block_size) for p in prefixes]
    width = max(need) if exact else max(need) + 1
    num_blocks = sum(need) + 2
    perm = torch.randperm(num_blocks, generator=gen, device=device)
    table = torch.randint(0, num_blocks, (len(prefixes), width), generator=gen, device=device)
    start = 0
    for b, n in enumerate(need):
        table[b, :n] = perm[start:start + n]
        start += n
    shape = (num_blocks, block_size, kv_heads, head_dim)
    return {
        "k_cache": torch.randn(*shape, generator=gen, device=device).to(dtype),
        "v_cache": torch.randn(*shape, generator=gen, device=device).to(dtype),
        "block_tables": table.to(torch.int32),
        "prefix_lens": torch.tensor(prefixes, dtype=torch.int32, device=device),
    }


def smoke_cases():
    return [
        {"seqlens": (17, 1, 16), "prefixes": pre, "q_heads": 4, "kv_heads": 2, "head_dim": 32, "block_size": 16,
         "dtype": dt, "causal": causal}
        for dt in DTYPES for pre in (None, (5, 16, 0)) for causal in (True, False)
    ]


def bench_cases():
    bf16, out = torch.bfloat16, []
    total = 16384  # tokens per batch: batch = total // seq
    for D, Hq, Hkv in ((128, 32, 32), (64, 16, 16), (128, 32, 8)):
        for seq in (1024, 2048, 4096, 8192, 16384):
            for causal in (True, False):
                out.append({"batch": total // seq, "seqlen": seq, "prefix": 0, "q_heads": Hq, "kv_heads": Hkv,
                            "head_dim": D, "block_size": 16, "dtype": bf16, "causal": causal})
    # Chunked prefill: a 512-token chunk over a 4k cached prefix, and the same kernel with no prefix.
    for bs in (16, 128):
        out.append({"batch": 8, "seqlen": 512, "prefix": 4096, "q_heads": 32, "kv_heads": 8, "head_dim": 128,
                    "block_size": bs, "dtype": bf16, "causal": True})
    out.append({"batch": 4, "seqlen": 4608, "prefix": 0, "q_heads": 32, "kv_heads": 8, "head_dim": 128,
                "block_size": 16, "dtype": bf16, "causal": True})
    return out


def _pairs(case):
    seqlens = seqlens_of(case)
    return list(zip(seqlens, prefixes_of(case) or (0,) * len(seqlens), strict=True))


def reduction_len(case):
    return max(s + p for s, p in _pairs(case))


def flops(case):
    """4 * D * Hq * (scores seen): S*P + S^2 (halved for the causal part)."""
    seen = sum(s * p + (s * s / 2 if case["causal"] else s * s) for s, p in _pairs(case))
    return 4.0 * case["head_dim"] * case["q_heads"] * seen


def bytes_moved(case):
    e, D = case["dtype"].itemsize, case["head_dim"]
    tokens = sum(seqlens_of(case))
    prefix = sum(p for _, p in _pairs(case))
    return e * D * (2 * tokens * case["q_heads"] + 2 * (tokens + prefix) * case["kv_heads"])
