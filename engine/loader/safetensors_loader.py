"""Safetensors checkpoints: find the files, validate their headers, stream tensors onto the device.

File layout (one file): ``u64 little-endian header length N | N bytes of JSON header | data``. The
header maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` relative to the
start of the data section. Every header is checked against the file size and against the shapes and
dtypes it declares before any tensor is read, so a truncated or corrupt file fails with its name and
the problem rather than with a crash or silently wrong weights.

Tensors are read through ``safe_open``, which memory-maps the file: each tensor is copied once from the
page cache to the device, and the whole model is never held twice in host memory.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import torch

from engine.loader.errors import ModelLoadError
from engine.loader.paths import check_inside, safe_child

INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format itself caps headers at 100 MB

_ITEMSIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}


def find_weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of ``model_dir``: those named by the index, else model.safetensors or *.safetensors.

    Pickle checkpoints (.bin/.pt) are never loaded: unpickling runs arbitrary code.
    """
    model_dir = Path(model_dir)
    index = model_dir / INDEX_FILE
    if index.exists():
        check_inside(model_dir, index, "index file")
        return [safe_child(model_dir, name, "shard named in the index") for name in index_files(index)]
    files = sorted(p for p in model_dir.glob("*.safetensors"))
    if files:
        return [safe_child(model_dir, p.name, "weights file") for p in files]
    pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadError(
            f"only pickle checkpoints found ({', '.join(pickles)}); tritonforge never loads pickle files "
            "because unpickling can run arbitrary code. Convert the model to safetensors "
            "(e.g. save_pretrained(..., safe_serialization=True)) or use a safetensors or GGUF release", model_dir)
    raise ModelLoadError("no *.safetensors weights found in the model directory", model_dir)


def index_files(index: Path) -> list[str]:
    """The distinct weight files an index's weight_map names (validated to be .safetensors names)."""
    try:
        data = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"cannot parse the index file: {err}", index) from err
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelLoadError("index file has no 'weight_map' object mapping tensor names to files", index)
    files = []
    for name, file in weight_map.items():
        if not isinstance(file, str) or not file.endswith(".safetensors"):
            raise ModelLoadError(f"index maps {name!r} to {file!r}, which is not a .safetensors file", index)
        if file not in files:
            files.append(file)
    return files


def read_header(path: Path) -> dict[str, dict]:
    """The validated header of one safetensors file: name -> {"dtype", "shape", "data_offsets"}."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ModelLoadError(f"file is {size} bytes, too short to be safetensors (truncated?)", path)
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise ModelLoadError(
                    f"header length {header_len} does not fit the file size {size} (truncated or not safetensors)",
                    path)
            raw = f.read(header_len)
    except OSError as err:
        raise ModelLoadError(f"cannot read file: {err}", path) from err
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"header is not valid JSON ({err}); the file is corrupt", path) from err
    if not isinstance(header, dict):
        raise ModelLoadError("header is not a JSON object; the file is corrupt", path)
    header.pop("__metadata__", None)
    _check_ranges(path, header, size - 8 - header_len)
    return header


def _check_ranges(path: Path, header: dict, data_size: int) -> None:
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise ModelLoadError(f"tensor {name!r} has a malformed header entry", path)
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _ITEMSIZE:
            raise ModelLoadError(f"tensor {name!r} has unknown dtype {dtype!r}", path)
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ModelLoadError(f"tensor {name!r} has an invalid shape {shape!r}", path)
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
            raise ModelLoadError(f"tensor {name!r} has invalid data_offsets {offsets!r}", path)
        numel = 1
        for d in shape:
            numel *= d
        if offsets[1] - offsets[0] != numel * _ITEMSIZE[dtype]:
            raise ModelLoadError(
                f"tensor {name!r}: {dtype} {shape} needs {numel * _ITEMSIZE[dtype]} bytes but its data_offsets "
                f"span {offsets[1] - offsets[0]}", path)
        if offsets[1] > data_size:
            raise ModelLoadError(
                f"tensor {name!r} ends at byte {offsets[1]} of the data section, which has only {data_size} "
                "bytes (truncated file?)", path)
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    for (_, end, first), (begin, _, second) in itertools.pairwise(spans):
        if begin < end:
            raise ModelLoadError(f"tensors {first!r} and {second!r} overlap in the file; it is corrupt", path)


def tensor_shapes(files: list[Path]) -> dict[str, tuple[tuple[int, ...], Path]]:
    """name -> (shape, file) over all files; a name in two files is an error."""
    found: dict[str, tuple[tuple[int, ...], Path]] = {}
    for file in files:
        for name, info in read_header(file).items():
            if name in found:
                raise ModelLoadError(f"tensor {name!r} appears in both {found[name][1].name} and {file.name}", file)
            found[name] = (tuple(info["shape"]), file)
    return found


def iter_safetensors(names_by_file: dict[Path, list[str]], device, dtype: torch.dtype | None
                     ) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) for the given names, file by file, each copied once onto ``device``.

    Floating-point tensors are cast to ``dtype`` (on the device, after the copy) when it is given.
    """
    from safetensors import safe_open

    device = torch.device(device)
    for file, names in names_by_file.items():
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for name in names:
                    tensor = handle.get_tensor(name)
                    # On CPU get_tensor already made the one copy; elsewhere this is the one copy.
                    tensor = tensor.to(device)
                    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                        tensor = tensor.to(dtype)
                    yield name, tensor
        except ModelLoadError:
            raise
        except (OSError, RuntimeError, ValueError) as err:
            if type(err).__name__ == "OutOfMemoryError":
                raise
            raise ModelLoadError(f"cannot read tensors: {err}", file) from err
