"""``harness probe [CONFIG.yaml] [key.sub=value ...]``: probe a network at every layer on downstream tasks."""
from __future__ import annotations

import argparse

from harness.commands.train import add_run_args, split_args
from harness.core import config as configs
from harness.core.errors import HarnessError
from harness.reports import collect
from harness.sweeps.launch import run_locally

HELP = """\
Probe the network a run config describes at every named layer on downstream tasks (`harness list
tasks`): a logistic-regression probe with C chosen on each task's validation split and a kNN per
layer and task, RankMe of every layer's features, linear CKA between the layers. For example

  harness probe probe.tasks=[digits,digits_colour] backbone.name=cnn steps=500
  harness probe probe.tasks=[digits] probe.init=random backbone.name=cnn

probe.init=trained (default) first trains (or resumes, or finds) the run the same config describes
without probe, in its own folder (output_dir/<its hash>), as a trial of its own under its lock;
random probes that network untrained, as initialised from seed. probe
keys: tasks (names or {name, options}), init, layers ([]: all), cs (the C grid), knn_k, max_iter,
batch_size. The probe run folder holds predictions/<task>/<layer>.npz (scored by the transfer
protocol: `harness collect`), cka.json, spectrum.png, cka.png. Features are cached in
output_dir/feature_cache by network weights, layer and dataset."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path, overrides = split_args(args.args)
    cfg = configs.load(path, overrides)
    if cfg["probe"] is None:
        raise HarnessError("probe.tasks is not set; name the downstream tasks, e.g. probe.tasks=[digits] "
                           "(`harness list tasks`)")
    if args.print_config:
        print(configs.dump(cfg), end="")
        return 0
    out = run_locally("probe", cfg)
    frame = collect.load_runs([out])
    table = frame.pivot_table(index="layer", columns="dataset", values="test.probe_acc", sort=False)
    print(f"test linear probe accuracy, {cfg['algorithm']['name']} ({cfg['probe']['init']}):")
    print((100 * table).round(1).to_string())
    rankme = frame.groupby("layer", sort=False)["train.rankme"].first()
    print("RankMe (first task's train split): " + ", ".join(f"{k} {v:.1f}" for k, v in rankme.items()))
    print(f"run folder: {out}")
    return 0
