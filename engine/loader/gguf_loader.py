"""GGUF files (llama.cpp's format), read with the ``gguf`` package's GGUFReader.

Layout: ``"GGUF" | u32 version | u64 tensor count | u64 kv count | key/values | tensor infos | data``.
Each tensor info gives its dims ``ne`` innermost first (ne[0] = K, the reduction dim of a linear weight,
so HF's [N, K] is ``reversed(ne)``), its ggml type and its offset in the data section. Quantized types
store each row of K values as K / block_size blocks of type_size bytes: a weight is uint8
[N, K / block_size * type_size], and rows can be moved (un-permuted) without decoding them.

What is kept how:
- F32 / F16 / BF16 tensors become plain tensors of the requested dtype;
- 2-D linear weights of a type in ``kernels.gguf_formats.GGUF_SUPPORTED`` stay quantized (GGUFWeight);
- the token embedding (a row gather, not a matmul) is dequantized at load on the device; every other
  type is dequantized at load with gguf's own dequantizer, with a logged note.
llama-arch q_proj/k_proj rows were permuted by llama.cpp's converter for its interleaved RoPE; they are
un-permuted here so the model uses HF's half-rotation RoPE for every format.
"""

from __future__ import annotations

import logging
import struct
import warnings
from pathlib import Path

import numpy as np
import torch

from engine.loader.errors import ModelLoadError
from engine.loader.gguf_names import config_from_metadata, hf_name, llama3_scaling_from_rope_freqs, unpermute_rows
from engine.loader.weights import GGUFWeight, check_weights

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
F32, F16, BF16 = 0, 1, 30
_FLOAT_TYPES = {F32: torch.float32, F16: torch.float16, BF16: torch.bfloat16}


def check_gguf_header(path: Path) -> int:
    """Check the magic and version before handing the file to GGUFReader; returns the version."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise ModelLoadError(f"cannot read file: {err}", path) from err
    if len(head) < 8 or head[:4] != GGUF_MAGIC:
        raise ModelLoadError(f"not a GGUF file (magic {head[:4]!r}, expected {GGUF_MAGIC!r})", path)
    (version,) = struct.unpack("<I", head[4:])
    if version not in GGUF_VERSIONS:
        swapped = struct.unpack(">I", head[4:])[0] in GGUF_VERSIONS
        hint = " (a big-endian GGUF, which is not supported)" if swapped else ""
        raise ModelLoadError(f"GGUF version {version} is not supported{hint}; expected one of {GGUF_VERSIONS}", path)
    return version


def open_gguf(path: Path):
    """A GGUFReader for ``path``, its header checked and every tensor's data range inside the file."""
    from gguf import GGUFReader

    path = Path(path)
    check_gguf_header(path)
    size = path.stat().st_size
    try:
        reader = GGUFReader(path, "r")
    except Exception as err:  # GGUFReader raises ValueError/IndexError/struct errors on damaged files
        raise ModelLoadError(f"corrupt or truncated GGUF file: {type(err).__name__}: {err}", path) from err
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size or t.data.nbytes != int(t.n_bytes):
            raise ModelLoadError(f"tensor {t.name!r} data ends at byte {end}, beyond the file's {size} bytes "
                                 "(truncated file?)", path)
    return reader


def read_metadata(reader) -> dict:
    """GGUF key/values as Python values (strings decoded, arrays as lists), the GGUF.* header keys left out."""
    meta = {}
    for key, field in reader.fields.items():
        if not key.startswith("GGUF."):
            meta[key] = field.contents() if hasattr(field, "contents") else _field_value(field)
    return meta


def _field_value(field):
    """ReaderField.contents() for gguf releases that predate it."""
    from gguf import GGUFValueType

    def one(kind, index):
        part = field.parts[index]
        return bytes(part).decode("utf-8") if kind == GGUFValueType.STRING else part.tolist()[0]

    if field.types and field.types[0] == GGUFValueType.ARRAY:
        return [one(field.types[-1], i) for i in field.data]
    return one(field.types[0], field.data[0])


def load_gguf_source(path: Path):
    from engine.loader.gguf_tokenizer import tokenizer_from_gguf
    from engine.loader.source import ModelSource, generation_defaults

    path = Path(path)
    reader = open_gguf(path)
    meta = read_metadata(reader)
    tensors = {t.name: t for t in reader.tensors}
    tokens = meta.get("tokenizer.ggml.tokens")
    try:
        config = config_from_metadata(meta, set(tensors), len(tokens) if tokens else None)
    except ModelLoadError as err:
        raise type(err)(err.problem, path) from err
    tokenizer = tokenizer_from_gguf(meta, path)
    extra_eos = [meta[k] for k in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id") if k in meta]
    eos = list(dict.fromkeys(config.eos_token_ids + [int(i) for i in extra_eos] + tokenizer.eos_token_ids))
    config.eos_token_ids = tokenizer.eos_token_ids = eos
    if config.bos_token_id is None:
        config.bos_token_id = tokenizer.bos_token_id

    by_hf_name = {}
    for gguf_name, t in tensors.items():
        try:
            name = hf_name(gguf_name)
        except ModelLoadError as err:
            raise ModelLoadError(err.problem, path) from err
        if name is not None:
            by_hf_name[name] = t
    if "rope_freqs.weight" in tensors and config.rope_scaling is None:
        if int(tensors["rope_freqs.weight"].tensor_type) != F32:
            raise ModelLoadError("rope_freqs must be an F32 tensor", path)
        factors = _from_numpy(tensors["rope_freqs.weight"].data).float()
        try:
            config.rope_scaling = llama3_scaling_from_rope_freqs(factors, config.head_dim, config.rope_theta)
        except ModelLoadError as err:
            raise ModelLoadError(err.problem, path) from err
    shapes = {name: tuple(int(d) for d in reversed(t.shape)) for name, t in by_hf_name.items()}
    names = check_weights(config, shapes, path)

    def iter_weights(device, dtype):
        supported = _supported_types()
        for name in names:
            yield name, _load_tensor(path, name, by_hf_name[name], config, supported, device, dtype)

    generation = {key: meta[f"general.sampling.{key}"] for key in ("temperature", "top_p", "top_k", "min_p")
                  if f"general.sampling.{key}" in meta}
    return ModelSource(config, tokenizer, generation_defaults(generation), path, "gguf", [path], iter_weights)


def _supported_types() -> frozenset[int]:
    from kernels.gguf_formats import GGUF_SUPPORTED

    return frozenset(int(q) for q in GGUF_SUPPORTED)


def _load_tensor(path: Path, name: str, t, config, supported, device, dtype):
    qtype = int(t.tensor_type)
    shape = tuple(int(d) for d in reversed(t.shape))
    permute_heads = _permute_heads(name, config)
    if qtype in _FLOAT_TYPES:
        host = _from_numpy(t.data)
        if qtype == BF16:
            host = host.view(torch.bfloat16)
        tensor = host.to(device, copy=True).view(_FLOAT_TYPES[qtype]).reshape(shape)
    elif qtype in supported and len(shape) == 2 and name != "model.embed_tokens.weight":
        data = _from_numpy(t.data).to(device, copy=True).reshape(shape[0], -1)
        if permute_heads:
            data = unpermute_rows(data, permute_heads)
        return GGUFWeight(data=data, qtype=qtype, shape=shape)
    elif qtype in supported:  # the token embedding: decoded on the device, never as fp32 in host memory
        from kernels.gguf_formats import gguf_dequantize_reference

        data = _from_numpy(t.data).to(device, copy=True).reshape(shape[0], -1)
        tensor = gguf_dequantize_reference(data, qtype, torch.float32).reshape(shape)
    else:
        tensor = _dequantize(path, name, t, qtype).to(device).reshape(shape)
    if permute_heads:
        tensor = unpermute_rows(tensor, permute_heads)
    return tensor.to(dtype) if dtype is not None and tensor.dtype != dtype else tensor


def _dequantize(path: Path, name: str, t, qtype: int) -> torch.Tensor:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    type_name = GGMLQuantizationType(qtype).name
    if name != "model.embed_tokens.weight":
        log.info("%s: %s is %s, which has no quantized kernel; dequantizing it at load", path, name, type_name)
    try:
        return torch.from_numpy(np.ascontiguousarray(dequantize(t.data, qtype), dtype=np.float32))
    except NotImplementedError as err:
        raise ModelLoadError(f"tensor {name!r} uses quantization type {type_name}, which neither the kernels "
                             "nor the gguf package can decode", path) from err


def _permute_heads(name: str, config) -> int:
    """Head count for un-permuting this tensor's rows (llama-arch q/k only), else 0."""
    if config.architecture not in ("llama", "mistral"):
        return 0
    if ".self_attn.q_proj." in name:
        return config.num_attention_heads
    if ".self_attn.k_proj." in name:
        return config.num_key_value_heads
    return 0


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    """A tensor over the file's memory map (no copy); callers copy it once onto the device."""
    with warnings.catch_warnings():
        # The map is read-only and torch warns about that; every caller copies before any write.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)
