"""Import every module of a plugin package, so that a new algorithm, dataset or protocol is one new file."""
from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package_name: str, path: list[str]) -> None:
    """A module that fails to import is named in the error (the package alone would not say which)."""
    for module in pkgutil.iter_modules(path):
        if not module.name.startswith("_"):
            name = f"{package_name}.{module.name}"
            try:
                importlib.import_module(name)
            except Exception as exc:
                raise ImportError(f"{name}: {type(exc).__name__}: {exc}") from exc
