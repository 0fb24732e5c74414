"""``harness list [algorithms|datasets|backbones|protocols|launchers|kinds|tasks]``: the catalogue."""
from __future__ import annotations

import argparse

from tabulate import tabulate

from harness.core.registry import REGISTRIES, Entry, TrialKind, builder_options
from harness.data.tasks import Task
from harness.protocols.base import Protocol

COLUMNS = {"datasets": "options (default)", "launchers": "options (default): accepted; meaning",
           "kinds": "done when the run folder has", "protocols": "selection rules; metrics per split",
           "tasks": "dataset.label column (options)"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered algorithms, datasets, backbones, protocols, launchers, "
                                    "trial kinds, downstream tasks",
                       description="Names, one-line descriptions and settings (hyperparameters or options with "
                                   "their defaults) of everything registered, built-in or through entry points.")
    p.add_argument("kind", nargs="?", choices=sorted(REGISTRIES), help="only this kind")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for kind in [args.kind] if args.kind else sorted(REGISTRIES):
        rows = [[e.name, e.description, settings(e)] for e in REGISTRIES[kind].entries()]
        print(f"{kind}:")
        print(tabulate(rows, headers=["name", "description", COLUMNS.get(kind, "hyperparameters (default)")],
                       maxcolwidths=[None, 50, 70]))
        print()
    return 0


def settings(entry: Entry) -> str:
    """Hyperparameters with their defaults; declared options with what they accept (one a
    line); a trial kind's done files; for a builder without any, its keyword options."""
    if entry.hparams:
        return ", ".join(f"{k}={v.default}" for k, v in entry.hparams.items())
    if entry.options:
        return "\n".join(f"{k}={o.default!r}: {o.accepts()}; {o.help}" for k, o in entry.options.items())
    if isinstance(entry.obj, Task):
        return f"{entry.obj.dataset}.{entry.obj.label}" + (f" {entry.obj.options}" if entry.obj.options else "")
    if isinstance(entry.obj, TrialKind):
        return ", ".join(entry.obj.done_files)
    if isinstance(entry.obj, type) and issubclass(entry.obj, Protocol):
        rules = [f"{r.name}: {'last checkpoint, draw by ' if r.last_checkpoint else ''}"
                 f"{'max' if r.higher_is_better else 'min'} {r.column}" for r in entry.obj.rules]
        return "\n".join(rules) + "\nmetrics: " + ", ".join(entry.obj.metrics)
    if callable(entry.obj) and not isinstance(entry.obj, type):
        return ", ".join(f"{n}={p.default!r}" for n, p in builder_options(entry.obj).items()
                         if p.default is not p.empty)
    return ""
