"""One step's batch, flattened: token ids, positions and where each token's K/V lives in the paged cache.

The scheduler hands over sequences with a number of new tokens each (1 for a decode, a chunk length for
a prefill). The batch is laid out decode tokens first, then prefill chunks, so that attention can run the
two halves with the kernels made for each (``paged_decode_attention``, ``prefill_attention``) while every
other op runs once over all T tokens. For a sequence with ``c`` tokens already cached and ``n`` new ones:

    positions     c, c+1, ..., c+n-1
    slot_mapping  block_table[p // block_size] * block_size + p % block_size   for each position p
    decode        context_len = c + 1                (the cache holds the new token after the write)
    prefill       prefix_len = c, seqlen = n, cu_seqlens = running sum of the seqlens

Logits are needed only for a sequence whose chunk reaches its last known token (a decode, or the final
chunk of a prompt); ``logits_rows`` lists those rows of the flattened batch. Everything is assembled on
the host in numpy and reaches the device in one copy (an int64 buffer whose tail packs the int32 fields),
sliced there. A step where every sequence has one new token (the steady decode step; all its rows are
decode rows) takes a shorter path built from list comprehensions: this runs on every step, and its Python
time is part of what bounds small-batch decode on a fast GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.models.layers import AttentionMetadata


@dataclass
class StepBatch:
    token_ids: torch.Tensor      # [T] int64
    positions: torch.Tensor      # [T] int64
    meta: AttentionMetadata
    logits_rows: torch.Tensor    # [S] int64: rows of the hidden states to turn into logits
    sampled_seqs: list[int]      # for each logits row, the index of its sequence in the scheduler output
    num_decodes: int
    num_tokens: int
    # [3, T] view of token_ids, positions and slot_mapping (one block on the device): lets a captured
    # decode graph take all three in one copy.
    inputs: torch.Tensor | None = None


def build_step_batch(seqs, num_new_tokens: list[int], block_size: int, device: torch.device) -> StepBatch:
    if all(n == 1 for n in num_new_tokens):
        return _build_single_token_batch(seqs, block_size, device)
    order = [i for i, n in enumerate(num_new_tokens) if n == 1] + [i for i, n in enumerate(num_new_tokens) if n > 1]
    num_decodes = len(order) - sum(1 for n in num_new_tokens if n > 1)
    max_blocks = max(1, max(len(s.block_table) for s in seqs))
    tokens: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    lens: list[int] = []
    tables = np.zeros((len(order), max_blocks), dtype=np.int32)
    cu = [0]
    logits_rows, sampled = [], []
    for row, i in enumerate(order):
        seq, n = seqs[i], num_new_tokens[i]
        start = seq.num_computed_tokens
        table = seq.block_table
        assert n >= 1 and start + n <= seq.num_tokens, "the scheduler asked for tokens the sequence does not have"
        assert len(table) * block_size >= start + n, "blocks were not allocated for the new tokens"
        tables[row, : len(table)] = table
        if n == 1:  # the common case, kept to plain integer arithmetic (no per-row numpy calls)
            tokens.append(seq.token_ids[start])
            positions.append(start)
            slots.append(table[start // block_size] * block_size + start % block_size)
        else:
            tokens.extend(seq.token_ids[start:start + n])
            pos = np.arange(start, start + n, dtype=np.int64)
            positions.extend(pos.tolist())
            slots.extend((np.asarray(table, dtype=np.int64)[pos // block_size] * block_size
                          + pos % block_size).tolist())
        if row < num_decodes:
            lens.append(start + 1)
        else:
            lens.append(start)
            cu.append(cu[-1] + n)
        if start + n == seq.num_tokens:
            logits_rows.append(len(tokens) - 1)
            sampled.append(i)
    prefill_lens = lens[num_decodes:]
    return _assemble(tokens, positions, slots, logits_rows, sampled, tables, lens, cu, num_decodes,
                     max((num_new_tokens[i] for i in order[num_decodes:]), default=0),
                     any(c > 0 for c in prefill_lens), device)


def _build_single_token_batch(seqs, block_size: int, device: torch.device) -> StepBatch:
    """The steady decode step: one new token per sequence, every row a decode row (a one-token prompt too:
    paged decode attention over its single cached token). Rows are built by list comprehensions and the
    block tables from one padded list: no per-row numpy calls."""
    starts = [s.num_computed_tokens for s in seqs]
    tables = [s.block_table for s in seqs]
    max_blocks = max(1, max(len(t) for t in tables))
    for seq, start, table in zip(seqs, starts, tables, strict=True):
        assert start < seq.num_tokens, "the scheduler asked for tokens the sequence does not have"
        assert len(table) * block_size > start, "blocks were not allocated for the new tokens"
    tokens = [seq.token_ids[c] for seq, c in zip(seqs, starts, strict=True)]
    slots = [t[c // block_size] * block_size + c % block_size for t, c in zip(tables, starts, strict=True)]
    flat = [b for t in tables for b in (t + [0] * (max_blocks - len(t)) if len(t) < max_blocks else t)]
    table_array = np.array(flat, dtype=np.int32).reshape(len(seqs), max_blocks)
    sampled = [row for row, (seq, c) in enumerate(zip(seqs, starts, strict=True)) if c + 1 == seq.num_tokens]
    return _assemble(tokens, starts, slots, sampled, sampled, table_array, [c + 1 for c in starts], [0],
                     len(seqs), 0, False, device)


def _assemble(tokens, positions, slots, logits_rows, sampled, tables, lens, cu, num_decodes: int,
              prefill_max_seqlen: int, prefill_has_prefix: bool, device: torch.device) -> StepBatch:
    """One host buffer, one copy to the device, sliced there: int64 token ids, positions, slots and logits
    rows, then the int32 block tables, context lengths and cu_seqlens packed into the same int64 words."""
    T, S, R = len(tokens), len(logits_rows), tables.shape[0]
    n64 = 3 * T + S
    n32 = tables.size + len(lens) + len(cu)
    host = np.empty(n64 + (n32 + 1) // 2, dtype=np.int64)
    host[:n64] = tokens + positions + slots + logits_rows
    host32 = host[n64:].view(np.int32)
    host32[:tables.size] = tables.reshape(-1)
    host32[tables.size:n32] = lens + cu
    dev = _to_device(host, device)
    # Few tensor ops: each costs a microsecond or more of Python, and this runs on every step.
    inputs, rows_t, tail = dev.split([3 * T, S, host.size - n64])
    inputs = inputs.view(3, T)
    token_ids, pos_t, slot_t = inputs.unbind()
    tables_t, decode_lens, prefill_lens, cu_t, _ = tail.view(torch.int32).split(
        [tables.size, num_decodes, R - num_decodes, len(cu), 2 * (host.size - n64) - n32])
    decode_tables, prefill_tables = tables_t.view(R, tables.shape[1]).split([num_decodes, R - num_decodes])
    meta = AttentionMetadata(
        slot_mapping=slot_t,
        num_decode_tokens=num_decodes,
        decode_block_tables=decode_tables,
        decode_context_lens=decode_lens,
        max_decode_context_len=max(lens[:num_decodes], default=0),
        num_prefills=R - num_decodes,
        prefill_cu_seqlens=cu_t,
        prefill_max_seqlen=prefill_max_seqlen,
        prefill_block_tables=prefill_tables,
        prefill_prefix_lens=prefill_lens,
        prefill_has_prefix=prefill_has_prefix,
    )
    return StepBatch(token_ids, pos_t, meta, rows_t, sampled, num_decodes, T, inputs)


def _to_device(host: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(host)
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)
