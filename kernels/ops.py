"""Imports every op module so that each one's ``register(...)`` runs.

An op module is any module in this package that is not part of the framework itself (listed below) and
whose name does not start with an underscore. Adding a kernel is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil

import kernels

FRAMEWORK = {"device", "registry", "ops", "testing", "tuning", "alloc"}

for _info in sorted(pkgutil.iter_modules(kernels.__path__), key=lambda m: m.name):
    if _info.name.startswith("_") or _info.name in FRAMEWORK:
        continue
    importlib.import_module(f"kernels.{_info.name}")
