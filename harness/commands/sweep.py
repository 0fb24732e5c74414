"""``harness sweep SPEC.yaml`` runs a sweep; ``harness sweep status SWEEP_DIR`` counts its trials."""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from tabulate import tabulate

from harness.core import config as configs
from harness.core import files
from harness.core.errors import HarnessError
from harness.sweeps import sweep
from harness.sweeps.launch import details, launch, summary
from harness.sweeps.launchers import override_launcher
from harness.sweeps.planner import PLAN_STATES, dotted
from harness.sweeps.trials import ERROR, Trial

SHOWN = 10  # failures listed by name

HELP = """\
Run every trial of a sweep spec: algorithms × datasets × axes × hparam draws × seeds, each after
the trials it needs (a probe's pretraining run, the discoveries of inferred groups).

  harness sweep demo.yaml                          # into sweeps/demo (the spec's name)
  harness sweep demo.yaml --launcher processes:4   # 4 worker processes on this machine
  harness sweep demo.yaml --launcher slurm         # SLURM array jobs (with the spec's slurm options, if any)
  harness sweep demo.yaml --launcher '{name: slurm, partition: debug, time_min: 30}'
  harness sweep demo.yaml --launcher '{name: processes, workers: 1, ranks: 2}'   # each trial data-parallel
                                                   # on 2 ranks (slurm: one job of 2 tasks); same hashes
  harness sweep demo.yaml --dry-run                # the planned trials, nothing run
  harness sweep status sweeps/demo                 # done / running / failed / interrupted / not started

A spec (YAML):

  name: demo
  datasets: [colored_digits]
  algorithms: [erm, {name: group_dro, overrides: {algorithm.hparams.eta: 0.05}}]
  axes: {backbone.options.width: [32, 64]}   # any config key with a list of values, crossed
  groups: [annotated]            # the groups axis: annotated | classes | none | inferred:<discovery method>
  hparam_draws: 4                # draw 0 is the defaults, draws 1..3 random (each hparam from its own seed)
  seeds: 3
  overrides: {steps: 600, eval_every: 50}
  discovery: {algorithms: [xrm], hparam_draws: 2, seeds: paired}   # only for inferred:<method>
  launcher: {name: processes, workers: 2}     # or: local | processes:2 (shorthand) |
                                              # {name: slurm, partition: debug, time_min: 60, mem_gb: 4}
  kind: train                    # or probe: each network is trained once (a trial of its own), then
                                 # probed at every layer (overrides set probe.tasks; `harness probe --help`)

Launchers and their options (types, ranges, defaults): `harness list launchers`. An arm listed
twice with different `overrides` is two arms; each trial's config names its arm (`arm`: the
arm's own overrides as sorted key=value pairs).

Each trial runs in SWEEP_DIR/<hash of its resolved config>. Relaunching the same command skips
done trials and resumes interrupted ones from their checkpoints; a failing trial writes
error.txt in its folder and the others go on (exit code 1 if any failed); the trials that need
it are blocked (named in the report and in `status`). Trials run in waves: first those that
need nothing, then those whose upstream trials are done; trials with inferred groups use the
best discovery run of their seed.
Then: `harness collect SWEEP_DIR` for tables, `harness leaderboard submit BOARD SWEEP_DIR --board-dir DIR`."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="+", metavar="SPEC.yaml | status SWEEP_DIR",
                   help="a sweep spec to run, or `status` and a sweep folder")
    p.add_argument("--dir", help="sweep folder (default: sweeps/<spec name>)")
    p.add_argument("--launcher", help="overrides the spec's launcher: a name (local, processes, slurm), "
                                      "processes:N, or a YAML mapping {name: ..., option: value}; the spec's "
                                      "options of the same launcher are kept under the ones given")
    p.add_argument("--dry-run", action="store_true", help="list the planned trials and their states; run nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.target[0] == "status":
        if len(args.target) != 2:
            raise HarnessError("usage: harness sweep status SWEEP_DIR")
        return show_status(sweep.load_plan(files.folder_arg(args.target[1], "SWEEP_DIR", must_exist=True)))
    if len(args.target) != 1:
        raise HarnessError(f"one spec file, got {args.target}; for states: harness sweep status SWEEP_DIR")
    spec = sweep.load_spec(args.target[0])
    if args.launcher:
        spec.launcher = override_launcher(spec.launcher, configs.parse_value(args.launcher))
    folder = files.folder_arg(args.dir, "--dir") if args.dir is not None else Path("sweeps") / spec.name
    if args.dry_run:
        return show_status(sweep.Plan(spec, folder), every_trial=True)
    report = launch(spec, folder)
    print(f"sweep {spec.name} in {folder}: {summary(report)}")
    for line in details(report, folder):
        print(line)
    print(f"next: harness sweep status {folder} | harness collect {folder}")
    return 0 if report.ok else 1


def show_status(plan: sweep.Plan, every_trial: bool = False) -> int:
    """Counts by (kind, algorithm, axes); the chain (what waits for what, what a failed upstream
    blocks); with ``every_trial``, one line per trial with the trials it needs."""
    status = sweep.status(plan)
    axes = plan.spec.axes
    states = {t.hash: s for t, s in status.trials}

    def axis_values(t: Trial) -> list:
        return [t.axes.get(key, dotted(t.cfg, key)) for key in axes]

    def needs(t: Trial) -> str:
        return ", ".join(f"{h} ({status.by_hash[h].kind}, {states[h]})" for h in t.needs)

    if every_trial:
        rows = [[t.hash, t.kind, t.cfg["algorithm"]["name"], t.cfg["dataset"]["name"], *axis_values(t),
                 t.cfg["algorithm"]["hparams_seed"], t.cfg["seed"], s, needs(t)] for t, s in status.trials]
        print(tabulate(rows, headers=["trial", "kind", "algorithm", "dataset", *axes, "draw", "seed", "state",
                                      "needs"]))
    counts: dict[tuple, Counter] = {}
    for t, s in status.trials:
        algorithm = t.cfg["algorithm"]["name"] + (f" [{t.cfg['arm']}]" if t.cfg.get("arm") else "")
        counts.setdefault((t.kind, algorithm, *axis_values(t)), Counter())[s] += 1
    rows = [[*key, *(c[s] for s in PLAN_STATES)] for key, c in counts.items()]
    total = Counter(s for _, s in status.trials) + Counter(s for _, s in status.waiting)
    rows.append(["all", "", *("" for _ in axes), *(total[s] for s in PLAN_STATES)])
    print(f"sweep {plan.spec.name} ({plan.dir}):")
    print(tabulate(rows, headers=["kind", "algorithm", *axes, *PLAN_STATES]))
    waits = sorted({w.message() for w, s in status.waiting if s != "blocked"})
    if waits:
        print(f"{len(waits)} trial(s) not started wait for upstream trials:")
        for line in waits:
            print(f"  {line}")
    chained = [t for t, s in status.trials if s not in ("done", "blocked") and any(states[h] != "done" for h in t.needs)]
    _listed([f"{t.hash} ({t.label}) needs {needs(t)}" for t in chained], "trial(s) waiting for upstream trials")
    _listed(status.blocked_lines(), "blocked trial(s)")
    failed = [t for t, s in status.trials if s == "failed"]
    _listed([f"failed: {t.label}: {(t.dir / ERROR).read_text().strip().splitlines()[-1]}  ({t.dir / ERROR})"
             for t in failed], "failed trial(s)")
    return 0


def _listed(lines: list[str], what: str) -> None:
    for line in lines[:SHOWN]:
        print(line)
    if len(lines) > SHOWN:
        print(f"... and {len(lines) - SHOWN} more {what}")
