"""``harness list [algorithms|datasets|backbones]``: the catalogue."""
from __future__ import annotations

import argparse

from tabulate import tabulate

from harness.core.registry import REGISTRIES, Entry, builder_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered algorithms, datasets and backbones",
                       description="Names, one-line descriptions and hyperparameters (name=default) "
                                   "of everything registered, built-in or through entry points.")
    p.add_argument("kind", nargs="?", choices=sorted(REGISTRIES), help="only this kind")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for kind in [args.kind] if args.kind else sorted(REGISTRIES):
        rows = [[e.name, e.description, settings(e)] for e in REGISTRIES[kind].entries()]
        column = "options (default)" if kind == "datasets" else "hyperparameters (default)"
        print(f"{kind}:")
        print(tabulate(rows, headers=["name", "description", column], maxcolwidths=[None, 60, 50]))
        print()
    return 0


def settings(entry: Entry) -> str:
    """Hyperparameters with their defaults; for a builder without any, its keyword options."""
    if entry.hparams:
        return ", ".join(f"{k}={v.default}" for k, v in entry.hparams.items())
    if callable(entry.obj) and not isinstance(entry.obj, type):
        return ", ".join(f"{n}={p.default!r}" for n, p in builder_options(entry.obj).items()
                         if p.default is not p.empty)
    return ""
