"""Path safety for model files: every file a model names must stay inside the model's own directory.

Index files (model.safetensors.index.json) and directory listings come from outside; a name like
``../../etc/passwd`` or a symlink pointing elsewhere must not make the loader read files it was never
given. A Hugging Face cache snapshot is the one sanctioned exception: its files are symlinks into the
repository's ``blobs/`` folder (``models--org--name/snapshots/<rev>/x -> ../../blobs/<hash>``), so that
folder is allowed too.
"""

from __future__ import annotations

from pathlib import Path

from engine.loader.errors import ModelLoadError


def allowed_roots(model_dir: Path) -> list[Path]:
    """The directories files of ``model_dir`` may resolve into (itself, and a hub snapshot's blobs/)."""
    model_dir = Path(model_dir)
    roots = [model_dir.resolve()]
    if model_dir.parent.name == "snapshots":
        roots.append((model_dir.parent.parent / "blobs").resolve())
    return roots


def safe_child(model_dir: Path, name: str, what: str = "file") -> Path:
    """``model_dir / name`` after checking that it names a regular file that resolves inside the model.

    Raises ModelLoadError when the name is absolute, climbs out with ``..``, is a symlink to a file
    outside the model directory, or does not exist.
    """
    model_dir = Path(model_dir)
    if not isinstance(name, str) or not name:
        raise ModelLoadError(f"{what} name {name!r} is not a file name", model_dir)
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ModelLoadError(
            f"{what} {name!r} points outside the model directory; only plain names inside it are allowed", model_dir)
    candidate = model_dir / relative
    check_inside(model_dir, candidate, what)
    if not candidate.is_file():
        raise ModelLoadError(f"{what} {name!r} does not exist (or is not a regular file)", model_dir)
    return candidate


def check_inside(model_dir: Path, path: Path, what: str = "file") -> Path:
    """Resolve ``path`` (following symlinks) and check that it lands inside one of ``allowed_roots``."""
    resolved = Path(path).resolve()
    for root in allowed_roots(model_dir):
        if resolved == root or root in resolved.parents:
            return resolved
    raise ModelLoadError(
        f"{what} {Path(path).name!r} resolves to {resolved}, outside the model directory "
        "(a symlink or '..' escaping it); refusing to read it", model_dir)
