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
the host in numpy and reaches the device in two copies (one int64, one int32 buffer), sliced there.
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


def build_step_batch(seqs, num_new_tokens: list[int], block_size: int, device: torch.device) -> StepBatch:
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
    T = len(tokens)
    num_prefills = len(order) - num_decodes
    host64 = np.array(tokens + positions + slots + logits_rows, dtype=np.int64)
    host32 = np.concatenate([tables.reshape(-1), np.array(lens + cu, dtype=np.int32)])
    dev64 = _to_device(host64, device)
    dev32 = _to_device(host32, device)
    token_ids, pos_t, slot_t, rows_t = dev64.split([T, T, T, len(logits_rows)])
    nt = tables.size
    tables_t = dev32[:nt].view(len(order), max_blocks)
    lens_t = dev32[nt: nt + len(order)]
    cu_t = dev32[nt + len(order):]
    prefill_lens = lens[num_decodes:]
    meta = AttentionMetadata(
        slot_mapping=slot_t,
        num_decode_tokens=num_decodes,
        decode_block_tables=tables_t[:num_decodes],
        decode_context_lens=lens_t[:num_decodes],
        max_decode_context_len=max(lens[:num_decodes], default=0),
        num_prefills=num_prefills,
        prefill_cu_seqlens=cu_t,
        prefill_max_seqlen=max(num_new_tokens[i] for i in order[num_decodes:]) if num_prefills else 0,
        prefill_block_tables=tables_t[num_decodes:],
        prefill_prefix_lens=lens_t[num_decodes:],
        prefill_has_prefix=any(c > 0 for c in prefill_lens),
    )
    return StepBatch(token_ids, pos_t, meta, rows_t, sampled, num_decodes, T)


def _to_device(host: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(host)
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)
