"""The ``harness`` command. Each subcommand is a module in ``harness.commands`` with
``add_parser(subparsers)`` and ``run(args) -> int``. Only the module of the command being run
is imported (commands import torch, pandas, scipy): ``harness --help`` lists the commands from
the one-line summaries here, without importing any of them."""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from harness.core.errors import HarnessError, RunDiverged, brief

COMMANDS = {
    "quickstart": "sweep + worst-group leaderboard on colored_digits, in one command",
    "train": "train one run",
    "discover": "discover environments (XRM, JTT error sets)",
    "probe": "probe a network at every layer on downstream tasks (transfer)",
    "visualize": "see what a network's layer keeps: a diffusion model conditioned on it (RCDM)",
    "features": "encode a dataset once with a frozen backbone and cache the features",
    "sweep": "run a sweep of trials, or count their states (sweep status DIR)",
    "collect": "tables from a sweep, recomputed from stored predictions",
    "leaderboard": "submit sweep results to a board, verify entries, render the table",
    "list": "list registered algorithms, datasets, backbones, protocols, launchers, trial kinds, downstream tasks",
}

DESCRIPTION = """\
shift-harness: train and compare methods under distribution shift.

  harness quickstart                    sweep + worst-group leaderboard on colored_digits
  harness list                          what is registered (algorithms, datasets, backbones, protocols, ...)
  harness train dataset.name=colored_digits algorithm.name=group_dro
  harness train run.yaml algorithm.hparams.lr=1e-3 seed=2
  harness discover algorithm.name=xrm   then   harness train algorithm.name=group_dro groups=inferred:<folder>
  harness probe probe.tasks=[digits,digits_colour] backbone.name=cnn    # transfer probes at every layer
  harness visualize visualize.layer=backbone backbone.name=cnn   # samples conditioned on a layer
  harness sweep spec.yaml --launcher processes:2     # or local, slurm; rerun to resume
  harness sweep status sweeps/spec
  harness collect sweeps/spec --format latex         # tables recomputed from predictions
  harness leaderboard submit worst_group sweeps/spec --board-dir myboard   # then: verify / render

`harness COMMAND --help` explains each command.
"""


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser with the full subparser of the command ``argv`` names (its module imported)
    and a summary-only entry for every other command."""
    parser = argparse.ArgumentParser(prog="harness", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    words = sys.argv[1:] if argv is None else argv
    chosen = next((w for w in words if not w.startswith("-")), None)
    for name, summary in COMMANDS.items():
        if name == chosen:
            importlib.import_module(f"harness.commands.{name}").add_parser(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:  # overrides written after an option: `harness train --no-progress seed=2`
        if not hasattr(args, "args") or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.args += extra
    previous = _interrupt_on_sigterm()
    try:
        return args.func(args)
    except HarnessError as exc:
        print(f"harness: error: {brief(str(exc))}", file=sys.stderr)
        return 2
    except RunDiverged as exc:
        print(f"harness: run failed: {brief(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("harness: interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt_on_sigterm() -> object:
    """Make SIGTERM (``kill``, a scheduler's stop) end a command as Ctrl-C does: the same message,
    worker processes stopped and their semaphores freed. Returns the handler it replaced (None
    off the main thread, where no handler can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    return signal.signal(signal.SIGTERM, interrupt)
