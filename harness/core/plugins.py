"""Import every module of a package, so that a new algorithm or dataset is one new file."""
from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package_name: str, path: list[str]) -> None:
    for module in pkgutil.iter_modules(path):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package_name}.{module.name}")
