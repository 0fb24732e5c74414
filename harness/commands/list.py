"""``harness list [algorithms|datasets|backbones]``: the catalogue."""
from __future__ import annotations

import argparse

from tabulate import tabulate

from harness.registry import REGISTRIES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered algorithms, datasets and backbones",
                       description="Names, one-line descriptions and hyperparameters (name=default) "
                                   "of everything registered, built-in or through entry points.")
    p.add_argument("kind", nargs="?", choices=sorted(REGISTRIES), help="only this kind")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for kind in [args.kind] if args.kind else sorted(REGISTRIES):
        rows = [[e.name, e.description, ", ".join(f"{k}={v.default}" for k, v in e.hparams.items())]
                for e in REGISTRIES[kind].entries()]
        print(f"{kind}:")
        print(tabulate(rows, headers=["name", "description", "hyperparameters (default)"]))
        print()
    return 0
