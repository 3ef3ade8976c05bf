"""``tritonforge models [DIR...]``: list local models (Hugging Face directories and GGUF files).

Each model is described from its headers only (config.json, safetensors headers, GGUF metadata), so
listing is fast even for large models: architecture, parameter count, size on disk, format and the
quantization (GGUF file type, or the safetensors weight dtype). Default search paths: the current
directory and the Hugging Face hub cache. A damaged model is listed with its problem, not skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

MAX_DEPTH = 2  # how deep below a search path to look for model directories and .gguf files
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".cache"}


@dataclass
class ModelInfo:
    name: str
    path: str
    format: str
    architecture: str = "?"
    parameters: int | None = None
    size_bytes: int = 0
    quant: str = "?"
    error: str | None = None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="DIR",
                        help="directories or .gguf files to look in (default: current dir and the hub cache)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per model")


def run(args: argparse.Namespace) -> int:
    from engine.loader.hub import hub_cache_dir

    paths = [Path(p) for p in args.paths] or [Path.cwd(), hub_cache_dir()]
    missing = [p for p in args.paths if not Path(p).exists()]
    for p in missing:
        print(f"error: {p}: no such file or directory", file=sys.stderr)
    models = find_models(paths)
    if args.json:
        for info in models:
            print(json.dumps(asdict(info)))
    else:
        print(format_table(models) if models else "no models found in " + ", ".join(str(p) for p in paths))
    return 1 if missing else 0


def find_models(paths: list[Path]) -> list[ModelInfo]:
    found: dict[Path, ModelInfo] = {}
    for root in paths:
        for candidate, name in _candidates(Path(root)):
            key = candidate.resolve()
            if key not in found:
                found[key] = describe(candidate, name)
    return list(found.values())


def _candidates(root: Path, depth: int = 0):
    """(path, display name) of every HF directory and .gguf file under ``root``."""
    if root.is_file():
        if root.suffix == ".gguf":
            yield root, str(root)
        return
    if not root.is_dir():
        return
    if (root / "config.json").is_file():
        yield root, str(root)
        return
    repos = sorted(root.glob("models--*"))
    if repos:  # a hub cache: name snapshots by repo id and revision
        for repo in repos:
            repo_id = repo.name.removeprefix("models--").replace("--", "/")
            for snapshot in sorted((repo / "snapshots").glob("*")):
                if (snapshot / "config.json").is_file():
                    yield snapshot, f"{repo_id}@{snapshot.name[:8]}"
                for gguf in sorted(snapshot.glob("*.gguf")):
                    yield gguf, f"{repo_id}/{gguf.name}@{snapshot.name[:8]}"
        return
    if depth >= MAX_DEPTH:
        return
    try:
        children = sorted(root.iterdir())
    except OSError:
        return
    for child in children:
        if child.name.startswith(".") or child.name in SKIP_DIRS:
            continue
        if child.is_dir() or child.suffix == ".gguf":
            yield from _candidates(child, depth + 1)


def describe(path: Path, name: str) -> ModelInfo:
    from engine.loader.errors import ModelLoadError

    info = ModelInfo(name=name, path=str(path), format="gguf" if path.is_file() else "safetensors")
    try:
        (_describe_gguf if info.format == "gguf" else _describe_hf)(path, info)
    except (ModelLoadError, OSError, ValueError) as err:
        info.error = str(err)
    return info


def _describe_hf(directory: Path, info: ModelInfo) -> None:
    from engine.loader.safetensors_loader import find_weight_files, read_header
    from engine.model_config import SUPPORTED_ARCHITECTURES

    config = json.loads((directory / "config.json").read_text())
    names = config.get("architectures") or [config.get("model_type", "?")]
    info.architecture = next((SUPPORTED_ARCHITECTURES[n] for n in names if n in SUPPORTED_ARCHITECTURES),
                             f"{names[0]} (unsupported)")
    files = find_weight_files(directory)
    dtypes: Counter = Counter()
    params = 0
    for file in files:
        info.size_bytes += file.stat().st_size
        for tensor in read_header(file).values():
            numel = 1
            for d in tensor["shape"]:
                numel *= d
            params += numel
            dtypes[tensor["dtype"]] += numel
    info.parameters = params
    info.quant = dtypes.most_common(1)[0][0] if dtypes else "?"


def _describe_gguf(path: Path, info: ModelInfo) -> None:
    import gguf

    from engine.loader.gguf_loader import open_gguf

    reader = open_gguf(path)
    field = reader.fields.get("general.architecture")
    info.architecture = field.contents() if field is not None else "?"
    info.size_bytes = path.stat().st_size
    info.parameters = sum(int(t.n_elements) for t in reader.tensors)
    file_type = reader.fields.get("general.file_type")
    try:
        info.quant = gguf.LlamaFileType(int(file_type.contents())).name.removeprefix("MOSTLY_")
    except (AttributeError, ValueError):  # no or unknown file type: name the most common tensor type
        by_type = Counter()
        for t in reader.tensors:
            by_type[t.tensor_type.name] += int(t.n_elements)
        info.quant = by_type.most_common(1)[0][0] if by_type else "?"


def format_table(models: list[ModelInfo]) -> str:
    header = ("NAME", "FORMAT", "ARCH", "PARAMS", "SIZE", "QUANT")
    rows = [header]
    for m in models:
        if m.error:
            rows.append((m.name, m.format, "-", "-", "-", f"error: {m.error}"))
        else:
            rows.append((m.name, m.format, m.architecture, human_count(m.parameters), human_bytes(m.size_bytes),
                         m.quant))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
                     for r in rows)


def human_count(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def human_bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
