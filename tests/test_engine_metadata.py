"""The step batch layout: decode rows first, positions, slots through block tables, logits rows.

Expected values are written out by hand for a small case (block size 16), not produced by the builder.
"""

from __future__ import annotations

import pytest
import torch

from engine.attention_metadata import build_step_batch
from engine.sampling_params import SamplingParams
from engine.sequence import Sequence

pytestmark = pytest.mark.engine


def _seq(name, tokens, computed, blocks):
    seq = Sequence(name, tokens, SamplingParams())
    seq.num_computed_tokens = computed
    seq.block_table = blocks
    return seq


def test_mixed_batch_layout():
    prefill = _seq("a", list(range(100, 120)), 0, [7, 3])            # 20-token prompt, first chunk of 18
    decode = _seq("b", list(range(200, 218)), 17, [5, 9])             # 17 cached, 1 new token at position 17
    tail = _seq("c", list(range(300, 340)), 32, [1, 2, 4])            # last chunk: positions 32..39
    batch = build_step_batch([prefill, decode, tail], [18, 1, 8], block_size=16, device=torch.device("cpu"))
    meta = batch.meta
    assert batch.num_decodes == 1 and meta.num_decode_tokens == 1 and meta.num_prefills == 2
    assert batch.token_ids.tolist() == [217, *range(100, 118), *range(332, 340)]
    assert batch.positions.tolist() == [17, *range(18), *range(32, 40)]
    # decode b: position 17 -> block 9 (second), offset 1; a: 0..15 in block 7, 16..17 in block 3; c: block 4.
    expected_slots = [9 * 16 + 1, *(7 * 16 + p for p in range(16)), 3 * 16, 3 * 16 + 1, *(4 * 16 + p for p in range(8))]
    assert meta.slot_mapping.tolist() == expected_slots
    assert meta.decode_context_lens.tolist() == [18]
    assert meta.decode_block_tables.tolist() == [[5, 9, 0]]
    assert meta.prefill_cu_seqlens.tolist() == [0, 18, 26]
    assert meta.prefill_prefix_lens.tolist() == [0, 32]
    assert meta.prefill_block_tables.tolist() == [[7, 3, 0], [1, 2, 4]]
    assert meta.prefill_max_seqlen == 18 and meta.prefill_has_prefix
    # Logits for b (its decode) and c (its chunk reaches the end); a is mid-prompt.
    assert batch.logits_rows.tolist() == [0, 26]
    assert batch.sampled_seqs == [1, 2]


def test_unsupported_architecture_names_the_supported_ones():
    from engine.model_config import UnsupportedModelError
    from engine.models import model_class

    with pytest.raises(UnsupportedModelError, match="llama, mistral, qwen2, qwen3"):
        model_class("gpt2")
