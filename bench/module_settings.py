"""Module data set for the length of a block: ``kernels.MODULE.NAME`` values (split policies, launch aims,
tiles) that the kernels read at launch, or ``engine.MODULE.NAME`` ones the engine reads when it is built (the
decode graphs' context bound), changed by benchmarks to time variants side by side.
"""

from __future__ import annotations

import contextlib
import importlib


@contextlib.contextmanager
def module_settings(settings: dict[str, object]):
    """Set each ``MODULE.NAME`` for the block; the previous values come back after, error or not."""
    saved = []
    try:
        for key, value in settings.items():
            module_name, _, attr = key.rpartition(".")
            module = importlib.import_module(module_name)
            saved.append((module, attr, getattr(module, attr)))
            setattr(module, attr, value)
        yield
    finally:
        for module, attr, old in reversed(saved):
            setattr(module, attr, old)
