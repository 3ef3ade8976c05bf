"""A Tokenizer rebuilt from GGUF metadata (``tokenizer.ggml.*``), or from a tokenizer.json beside the file.

GGUF stores a byte-level BPE ("gpt2" model) as its token strings, merges ("a b" pairs), token types and
special ids; ``tokenizer.ggml.pre`` names the pre-tokenizer (the regex that splits text into words
before BPE). That is enough to rebuild the same ``tokenizers.Tokenizer`` the model was trained with.
SentencePiece GGUFs ("llama" model) are not rebuilt: place the model's tokenizer.json beside the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.loader.errors import ModelLoadError
from engine.tokenizer import Tokenizer, TokenizerError

log = logging.getLogger(__name__)

CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types

# Word-splitting regexes of the pre-tokenizers llama.cpp names in tokenizer.ggml.pre. None: GPT-2's own,
# which the ByteLevel pre-tokenizer applies by itself.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZER_SPLITS = {"gpt2": None, "default": None, "llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT,
                        "qwen2": _QWEN2_SPLIT}


def tokenizer_from_gguf(meta: dict, gguf_path: Path) -> Tokenizer:
    """The tokenizer for a GGUF file with metadata ``meta``; ModelLoadError when it cannot be built."""
    model = meta.get("tokenizer.ggml.model")
    if model == "gpt2":
        return _byte_level_bpe(meta, gguf_path)
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
        f"GGUF tokenizer model {model!r} is not supported (only 'gpt2' byte-level BPE is rebuilt from metadata); "
        "put the model's tokenizer.json (and tokenizer_config.json) in the same directory as the file", gguf_path)


def _byte_level_bpe(meta: dict, gguf_path: Path) -> Tokenizer:
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
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
    backend.add_tokens([AddedToken(tokens[i], special=types[i] == CONTROL, normalized=False)
                        for i in range(len(tokens)) if types[i] in (CONTROL, USER_DEFINED)])

    bos_id, eos_id = meta.get("tokenizer.ggml.bos_token_id"), meta.get("tokenizer.ggml.eos_token_id")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False)) and bos_id is not None
    if add_bos:
        bos = tokens[bos_id]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
    config = {
        "bos_token": tokens[bos_id] if bos_id is not None and bos_id < len(tokens) else None,
        "eos_token": tokens[eos_id] if eos_id is not None and eos_id < len(tokens) else None,
        "add_bos_token": add_bos,
        "chat_template": meta.get("tokenizer.chat_template"),
    }
    return Tokenizer(backend, config, eos_token_ids=[] if eos_id is None else [int(eos_id)])
