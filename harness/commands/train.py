"""``harness train [CONFIG.yaml] [key.sub=value ...]``: one run, resumable."""
from __future__ import annotations

import argparse

from tabulate import tabulate

from harness.core import config as configs
from harness.core.files import read_jsonl
from harness.runs import distributed
from harness.runs.run import protocol_of, summarize, train

HELP = """\
Train one run described by a YAML file and/or dotted overrides, for example

  harness train dataset.name=colored_digits algorithm.name=group_dro steps=2000
  harness train run.yaml algorithm.hparams.lr=1e-3 seed=2

Config keys: dataset.{name,options.*}, algorithm.{name,hparams.*,hparams_seed},
backbone.{name,options.*} (auto = the dataset's default; mlp, cnn, timm:<model>),
groups (annotated | classes | none | inferred:<discovery run folder>), features, seed, steps, eval_every, device (auto | cpu | cuda),
amp, threads (auto: the free cores, or a number), eval_splits (auto: all, none for a discovery; or
e.g. [val, test]), eval_train_size (auto: 5,000 train examples, a seeded subset; 0: all), output_dir,
run_dir. `harness list` shows names and hyperparameters.

The run folder (output_dir/<config hash> unless run_dir is set) gets config.yaml, results.jsonl,
predictions/, checkpoint.pt, summary.json and a `done` marker. Running the same command again
resumes an unfinished run and skips a finished one."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p)
    p.set_defaults(func=run)


def add_config_args(p: argparse.ArgumentParser) -> None:
    """The arguments of every command that reads a run config: a YAML file, then overrides."""
    p.add_argument("args", nargs="*", metavar="CONFIG.yaml | key=value",
                   help="an optional YAML config file, then dotted overrides")


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The arguments of the commands that train a run (train, discover)."""
    add_config_args(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def split_args(args: list[str]) -> tuple[str | None, list[str]]:
    """The config file (the first argument without '=') and the overrides."""
    paths = [a for a in args if "=" not in a]
    if len(paths) > 1:
        from harness.core.errors import HarnessError
        raise HarnessError(f"at most one config file, got {paths}; overrides look like key.sub=value")
    return (paths[0] if paths else None), [a for a in args if "=" in a]


def run(args: argparse.Namespace) -> int:
    path, overrides = split_args(args.args)
    cfg = configs.load(path, overrides)
    configs.check_read("train", cfg)
    if args.print_config:
        print(configs.dump(cfg), end="")
        return 0
    out = train(cfg, progress=False if args.no_progress else None)
    if distributed.rank_and_world()[0] > 0:
        return 0  # a data-parallel run (torchrun): rank 0 reports
    protocol = protocol_of(cfg)
    summary = summarize(protocol, read_jsonl(out / "results.jsonl"))
    shown = [m.split(".", 1)[1] for m in protocol.reported if m.startswith("test.")]
    rows = [[rule, s["step"], *(s.get(m) for m in shown)] for rule, s in summary.items()]
    print(f"{cfg['algorithm']['name']} on {cfg['dataset']['name']} (seed {cfg['seed']}): test metrics "
          f"of the checkpoint each selection rule of the {protocol.name} protocol picks")
    print(tabulate(rows, headers=["selection", "step", *(protocol.metrics[m].label for m in shown)], floatfmt=".3f"))
    print(f"run folder: {out}")
    return 0
