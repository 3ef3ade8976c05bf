"""Imports every op module so that each one's ``register(...)`` runs.

An op module is any module in this package that is not part of the framework itself (listed below) and
whose name does not start with an underscore. Adding a kernel is adding one file.

A module that fails to import (a researcher's half-edited kernel, say) does not take the others down: its
error is kept in :data:`BROKEN`, the other ops register as usual, and whatever asks for an op of the broken
module (``registry.get``, the engine, ``tritonforge check``) is told which module failed and why.
``tests/test_registry.py`` fails while any module is broken.
"""

from __future__ import annotations

import importlib
import pkgutil

import kernels

FRAMEWORK = {"device", "registry", "ops", "testing", "tuning", "alloc"}


def import_op_modules(package) -> dict[str, str]:
    """Import every op module of ``package``; returns {module name: "ErrorType: message"} for those that failed."""
    broken = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in FRAMEWORK:
            continue
        name = f"{package.__name__}.{info.name}"
        try:
            importlib.import_module(name)
        except Exception as err:  # kept and reported wherever an op is looked up; the other modules go on
            broken[name] = f"{type(err).__name__}: {err}"
    return broken


BROKEN: dict[str, str] = import_op_modules(kernels)
