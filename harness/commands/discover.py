"""``harness discover [CONFIG.yaml] [key.sub=value ...]``: one environment discovery, resumable."""
from __future__ import annotations

import argparse

from tabulate import tabulate

from harness.commands.train import add_run_args, split_args
from harness.core import config as configs
from harness.data.environments import read_report
from harness.runs.discovery import check, discover

HELP = """\
Train a discovery algorithm (xrm, jtt_errors) through the normal run loop, then write into its
run folder the inferred environment of every train and val example id (environments.npz), a
report (discovery.json: final flip rate and its curve, environment sizes per class, degenerate
classes, agreement with annotations as a diagnostic) and flip_rate.png. For example

  harness discover algorithm.name=xrm dataset.name=colored_fashion_mnist steps=2000
  harness train algorithm.name=group_dro groups=inferred:<the run folder it printed>

Config keys are those of `harness train`; groups is always none (no annotation is used).
Train XRM's twins long (steps): the flip rate, and with it the environments, keep improving
after the accuracy has settled. To tune without annotations, run several discoveries (other
steps, algorithm.hparams_seed=1,2,...) and keep the one with the largest final flip rate.
Running the same command again resumes an unfinished discovery and skips a finished one."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("discover", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path, overrides = split_args(args.args)
    cfg = configs.load(path, ["groups=none", *overrides])
    configs.check_read("discovery", cfg)
    if args.print_config:
        check(cfg)
        print(configs.dump(cfg), end="")
        return 0
    out = discover(cfg, progress=False if args.no_progress else None)
    report = read_report(out)
    print(f"{report['algorithm']} discovery on {cfg['dataset']['name']} (seed {cfg['seed']}): "
          f"final flip rate {_fmt(report['flip_rate'])}"
          + (f"; DEGENERATE classes: {', '.join(report['class_names'][c] for c in report['degenerate'])}"
             if report["degenerate"] else ""))
    agreement = report["annotation_agreement"] or {}
    rows = [[split, name, n0, n1] + ([_fmt(agreement[split]["accuracy"]), _fmt(agreement[split]["ari"])]
                                     if agreement else [])
            for split, sizes in report["env_sizes"].items()
            for name, (n0, n1) in ((n, sizes[n]) for n in report["class_names"])]
    headers = ["split", "class", "env 0", "env 1"] + (["agreement acc*", "ARI*"] if agreement else [])
    print(tabulate(rows, headers=headers))
    if agreement:
        print("* with the annotations, per split: a diagnostic, never used by discovery")
    print(f"run folder: {out}")
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
