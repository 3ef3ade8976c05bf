"""Errors raised while finding and loading a model: each names the file (or model id) and the problem."""

from __future__ import annotations

from pathlib import Path


class ModelLoadError(Exception):
    """A model could not be loaded: ``path`` names the file or directory, the message says what to do."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(problem if path is None else f"{path}: {problem}")


class UnsupportedModelError(ModelLoadError):
    """The checkpoint's architecture is not one the engine implements."""


class ModelNotFoundError(ModelLoadError):
    """No local directory or file by that name, and the hub cache (or the hub) does not have it."""
