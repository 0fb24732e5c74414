"""The ``harness`` command. Each subcommand is a module in ``harness.commands`` with
``add_parser(subparsers)`` and ``run(args) -> int``."""
from __future__ import annotations

import argparse
import importlib
import sys

from harness.core.errors import HarnessError, RunDiverged

COMMANDS = ("quickstart", "train", "discover", "probe", "features", "sweep", "collect", "leaderboard", "list")

DESCRIPTION = """\
shift-harness: train and compare methods under distribution shift.

  harness quickstart                    sweep + worst-group leaderboard on colored_digits
  harness list                          what is registered (algorithms, datasets, backbones, protocols, ...)
  harness train dataset.name=colored_digits algorithm.name=group_dro
  harness train run.yaml algorithm.hparams.lr=1e-3 seed=2
  harness discover algorithm.name=xrm   then   harness train algorithm.name=group_dro groups=inferred:<folder>
  harness probe probe.tasks=[digits,digits_colour] backbone.name=cnn    # transfer probes at every layer
  harness sweep spec.yaml --launcher processes:2     # or local, slurm; rerun to resume
  harness sweep status sweeps/spec
  harness collect sweeps/spec --format latex         # tables recomputed from predictions
  harness leaderboard submit worst_group sweeps/spec --board-dir myboard   # then: verify / render

`harness COMMAND --help` explains each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"harness.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # overrides written after an option: `harness train --no-progress seed=2`
        if not hasattr(args, "args") or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.args += extra
    try:
        return args.func(args)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except RunDiverged as exc:
        print(f"harness: run failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("harness: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
