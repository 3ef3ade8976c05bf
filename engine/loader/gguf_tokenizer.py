"""A Tokenizer rebuilt from GGUF metadata (``tokenizer.ggml.*``), or from a tokenizer.json beside the file.

GGUF stores a byte-level BPE ("gpt2" model) as its token strings, merges ("a b" pairs), token types and
special ids; ``tokenizer.ggml.pre`` names the pre-tokenizer (the regex that splits text into words
before BPE). That is enough to rebuild the same ``tokenizers.Tokenizer`` the model was trained with.

A SentencePiece BPE ("llama" model: Llama 2, Mistral, TinyLlama) is stored as pieces with scores instead
of merges. SentencePiece repeatedly merges the adjacent pair whose union is the highest-scoring piece,
so the merge list is every split of a piece into two pieces, ranked by the union's score; spaces become
"▁" with one prepended, and characters outside the vocabulary fall back to <0xNN> byte pieces.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.loader.errors import ModelLoadError
from engine.tokenizer import Tokenizer, TokenizerError

log = logging.getLogger(__name__)

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6  # llama.cpp token types

# Word-splitting regexes of the pre-tokenizers llama.cpp names in tokenizer.ggml.pre. None: GPT-2's own,
# which the ByteLevel pre-tokenizer applies by itself.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Mistral's tekken (Mistral Nemo): words split by letter case, single digits.
_TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                 r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZER_SPLITS = {
    "gpt2": None, "default": None,
    "llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT,
    "tekken": _TEKKEN_SPLIT,
}


def tokenizer_from_gguf(meta: dict, gguf_path: Path) -> Tokenizer:
    """The tokenizer for a GGUF file with metadata ``meta``; ModelLoadError when it cannot be built."""
    model = meta.get("tokenizer.ggml.model")
    if model == "gpt2":
        return _byte_level_bpe(meta, gguf_path)
    if model == "llama" and meta.get("tokenizer.ggml.scores"):
        return _sentencepiece_bpe(meta, gguf_path)
    beside = Path(gguf_path).parent / "tokenizer.json"
    if beside.is_file():
        try:
            tok = Tokenizer.from_dir(beside.parent)
        except TokenizerError as err:
            raise ModelLoadError(str(err), beside) from err
        if tok.chat_template is None and meta.get("tokenizer.chat_template"):
            tok.chat_template = meta["tokenizer.chat_template"]
        return tok
    raise ModelLoadError(
        f"GGUF tokenizer model {model!r} is not supported (only 'gpt2' and 'llama' BPE tokenizers are rebuilt "
        "from metadata); put the model's tokenizer.json (and tokenizer_config.json) in the same directory as "
        "the file", gguf_path)


def _byte_level_bpe(meta: dict, gguf_path: Path) -> Tokenizer:
    from tokenizers import Regex, decoders, models, pre_tokenizers, processors
    from tokenizers import Tokenizer as Backend

    tokens = meta.get("tokenizer.ggml.tokens")
    merges = meta.get("tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise ModelLoadError("GGUF byte-level BPE tokenizer lacks tokenizer.ggml.tokens or tokenizer.ggml.merges",
                             gguf_path)
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab = {token: i for i, token in enumerate(tokens)}
    pairs = []
    for merge in merges:
        left, sep, right = merge.partition(" ")
        if not sep:
            raise ModelLoadError(f"GGUF merge {merge!r} is not a space-separated pair", gguf_path)
        pairs.append((left, right))
    try:
        backend = Backend(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
    except Exception as err:  # the Rust library raises a bare Exception for an inconsistent vocab/merges
        raise ModelLoadError(f"GGUF tokenizer metadata is inconsistent: {err}", gguf_path) from err

    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZER_SPLITS:
        log.warning("%s: unknown pre-tokenizer %r; splitting words as GPT-2 does, which may tokenize some "
                    "text differently from the original model", gguf_path, pre)
    split = PRE_TOKENIZER_SPLITS.get(pre)
    if split is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    backend.decoder = decoders.ByteLevel()
    return _finish(backend, meta, tokens, types, processors.ByteLevel(trim_offsets=False), add_bos_default=False)


def _sentencepiece_bpe(meta: dict, gguf_path: Path) -> Tokenizer:
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, normalizers

    tokens, scores = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.scores")
    types = meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    if not tokens or len(scores) != len(tokens) or len(types) != len(tokens):
        raise ModelLoadError("GGUF SentencePiece tokenizer needs tokens, scores and token types of one length",
                             gguf_path)
    vocab = {token: i for i, token in enumerate(tokens)}
    mergeable = {t: scores[i] for i, t in enumerate(tokens) if types[i] == NORMAL}
    ranked = []
    for piece, score in mergeable.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in mergeable and right in mergeable:
                ranked.append((-score, vocab[piece], cut, left, right))
    ranked.sort()
    unk_id = meta.get("tokenizer.ggml.unknown_token_id", types.index(UNKNOWN) if UNKNOWN in types else None)
    try:
        backend = Backend(models.BPE(vocab=vocab, merges=[(r[3], r[4]) for r in ranked], fuse_unk=True,
                                     byte_fallback=True, unk_token=None if unk_id is None else tokens[unk_id]))
    except Exception as err:  # the Rust library raises a bare Exception for an inconsistent vocab/merges
        raise ModelLoadError(f"GGUF tokenizer metadata is inconsistent: {err}", gguf_path) from err
    # SentencePiece's dummy prefix: always one "▁" in front, even before leading spaces (Metaspace would not).
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(content=" ", left=1, right=0)])
    return _finish(backend, meta, tokens, types, None, add_bos_default=True)


def _finish(backend, meta: dict, tokens: list[str], types: list[int], plain_post_processor,
            add_bos_default: bool) -> Tokenizer:
    """Special tokens, BOS handling and the Tokenizer wrapper, shared by both tokenizer models."""
    from tokenizers import AddedToken, processors

    backend.add_tokens([AddedToken(tokens[i], special=types[i] == CONTROL, normalized=False)
                        for i in range(len(tokens)) if types[i] in (CONTROL, USER_DEFINED)])
    bos_id, eos_id = meta.get("tokenizer.ggml.bos_token_id"), meta.get("tokenizer.ggml.eos_token_id")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default)) and bos_id is not None
    if add_bos:
        bos = tokens[bos_id]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    elif plain_post_processor is not None:
        backend.post_processor = plain_post_processor
    config = {
        "bos_token": tokens[bos_id] if bos_id is not None and bos_id < len(tokens) else None,
        "eos_token": tokens[eos_id] if eos_id is not None and eos_id < len(tokens) else None,
        "add_bos_token": add_bos,
        "chat_template": meta.get("tokenizer.chat_template"),
    }
    return Tokenizer(backend, config, eos_token_ids=[] if eos_id is None else [int(eos_id)])
