"""``harness list [algorithms|datasets|backbones|protocols|launchers|kinds|tasks]``: the catalogue.

Backbones are listed with their parameter counts at one input shape (``--input-shape``), with
the width knob applied where given (``--last-width``); ``--backbone timm:resnet50`` adds a named
model. Counting builds the networks, so torch is imported on that path only."""
from __future__ import annotations

import argparse
import inspect

from tabulate import tabulate

from harness.core.errors import HarnessError
from harness.core.registry import BACKBONES, REGISTRIES, Entry, TrialKind, builder_options
from harness.data.tasks import Task
from harness.protocols.base import Protocol

COLUMNS = {"datasets": "options (default)", "launchers": "options (default): accepted; meaning",
           "kinds": "done when the run folder has", "protocols": "selection rules; metrics per split",
           "tasks": "dataset.label column (options)"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", description="Names, one-line descriptions and settings (hyperparameters or options "
                                           "with their defaults) of everything registered, built-in or through "
                                           "entry points.")
    p.add_argument("kind", nargs="?", choices=sorted(REGISTRIES), help="only this kind")
    p.add_argument("--input-shape", default="3,32,32", metavar="C,H,W",
                   help="input shape at which backbones' parameters are counted (default: 3,32,32)")
    p.add_argument("--last-width", type=int, default=0, metavar="D",
                   help="count backbones that accept last_width (cnn, timm ResNets) with the last block's "
                        "output width set to D (default: 0, their own width)")
    p.add_argument("--backbone", action="append", default=[], metavar="NAME",
                   help="also count this backbone as a config names it, e.g. timm:resnet50 (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    shape = input_shape(args.input_shape)
    if args.last_width < 0:
        raise HarnessError(f"--last-width must be 0 (unchanged) or a positive width; got {args.last_width}")
    for kind in [args.kind] if args.kind else sorted(REGISTRIES):
        rows = [[e.name, e.description, settings(e)] for e in REGISTRIES[kind].entries()]
        headers = ["name", "description", COLUMNS.get(kind, "hyperparameters (default)")]
        if kind == "backbones":
            rows = [[*row, count(e.name, shape, args.last_width)] for row, e in zip(rows, BACKBONES.entries())]
            rows += [[name, "(named with --backbone)", "", count(name, shape, args.last_width)]
                     for name in args.backbone]
            width = f", last_width={args.last_width}" if args.last_width else ""
            headers.append(f"parameters at {'x'.join(map(str, shape))}{width}")
        print(f"{kind}:")
        print(tabulate(rows, headers=headers, maxcolwidths=[None, 50, 70]))
        print()
    return 0


def input_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise HarnessError(f"--input-shape must be positive integers separated by commas, like 3,32,32; got {text!r}")
    return shape


def count(name: str, shape: tuple[int, ...], last_width: int) -> str:
    """The backbone's parameter count, or why it is not counted (a family that needs its
    argument, a backbone that cannot take this shape)."""
    from harness.models.backbones import parameter_count

    entry = BACKBONES.get(name.partition(":")[0])
    if ":" not in name and entry.argument and _needs_argument(entry):
        return f"name one: {entry.name}:<{entry.argument[0]}>"
    options = {"last_width": last_width} if last_width and "last_width" in entry.hparams else {}
    try:
        return f"{parameter_count(name, shape, options):,}"
    except (HarnessError, RuntimeError, ValueError, IndexError) as exc:
        return f"not at this shape ({str(exc).splitlines()[0][:60]})"


def _needs_argument(entry: Entry) -> bool:
    option = entry.argument[0]
    return builder_options(entry.obj)[option].default is inspect.Parameter.empty


def settings(entry: Entry) -> str:
    """Hyperparameters with their defaults; declared options with what they accept (one a
    line); a trial kind's done files; for a builder without any, its keyword options."""
    if entry.hparams:
        return ", ".join(f"{k}={v.default}" for k, v in entry.hparams.items())
    if entry.options:
        return "\n".join(f"{k}={o.default!r}: {o.accepts()}" + (f"; {o.help}" if o.help else "")
                         for k, o in entry.options.items())
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
