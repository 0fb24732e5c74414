"""Sweep throughput: the processes:2 launcher against one process per trial (DomainBed's way).

The same 12 trials (ERM and GroupDRO × 2 hparam draws × 3 seeds on colored_digits, 600 steps,
evaluated every 50, as in the quickstart) run

- ours: ``harness sweep`` on ``processes:2``, two spawned workers that import torch and the
  harness once each and then run trial after trial;
- theirs: one ``python -m harness train CONFIG.yaml`` process per trial, two at a time (as
  DomainBed's launchers start one process per trial; two at a time so that both sides use the
  two cores), every process with one torch thread like our workers (OMP_NUM_THREADS=1).

Every trial runs on one torch thread on both sides (``threads: 1``, not hashed). Both sides start
from empty folders, and their results must be identical (checked). Wall clock of each side,
alternated over rounds; the medians are compared. Last line:
``ratio: <trials per hour, ours over theirs>``. ``--smoke``: one ERM trial of a few steps, one
worker a side.

    python benchmarks/sweep_throughput.py [--rounds 1] [--steps 600] [--smoke]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _sizing import parse
from harness.core import config
from harness.core.files import read_jsonl, write_text
from harness.sweeps import sweep
from harness.sweeps.launchers import Processes

ALGORITHMS = ["erm", "group_dro"]
# --smoke: seconds, the same path
SMOKE = {"steps": 4, "hparam_draws": 1, "seeds": 1, "algorithms": ["erm"], "workers": 1}


def spec(algorithms: list[str], steps: int, hparam_draws: int, seeds: int, workers: int) -> sweep.Spec:
    return sweep.parse_spec({"name": "throughput", "datasets": ["colored_digits"], "algorithms": algorithms,
                             "hparam_draws": hparam_draws, "seeds": seeds, "launcher": f"processes:{workers}",
                             "overrides": {"steps": steps, "eval_every": min(50, steps), "threads": 1}})


def ours(s: sweep.Spec, folder: Path, trials: int, workers: int) -> float:
    start = time.perf_counter()
    report = sweep.run_sweep(s, folder, Processes(workers))
    seconds = time.perf_counter() - start
    assert report.ok and report.ran == trials, report
    return seconds


def theirs(s: sweep.Spec, folder: Path, workers: int) -> float:
    trials, _ = sweep.Plan(s, folder).downstream()
    commands = []
    for trial in trials:
        path = folder / "configs" / f"{trial.hash}.yaml"
        write_text(path, config.dump(dict(trial.cfg, run_dir=str(folder / trial.hash))))
        commands.append([sys.executable, "-m", "harness", "train", str(path), "--no-progress"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        codes = list(pool.map(lambda c: subprocess.run(c, env=env, stdout=subprocess.DEVNULL).returncode, commands))
    seconds = time.perf_counter() - start
    assert codes == [0] * len(commands), codes
    return seconds


def same_results(a: Path, b: Path, s: sweep.Spec) -> bool:
    trials, _ = sweep.Plan(s, a).downstream()
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]  # noqa: E731
    return all(strip(read_jsonl(a / t.hash / "results.jsonl")) == strip(read_jsonl(b / t.hash / "results.jsonl"))
               for t in trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--hparam-draws", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="worker processes of ours, trials at a time of theirs")
    parser.set_defaults(algorithms=ALGORITHMS)
    args = parse(parser, SMOKE, threads=False)
    workers = args.workers
    s = spec(args.algorithms, args.steps, args.hparam_draws, args.seeds, workers)
    trials = len(args.algorithms) * args.hparam_draws * args.seeds
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            a, b = Path(tmp) / f"ours{r}", Path(tmp) / f"theirs{r}"
            times["ours"].append(ours(s, a, trials, workers))
            times["theirs"].append(theirs(s, b, workers))
            print(f"round {r}: processes:{workers} {times['ours'][-1]:.1f} s, one process per trial "
                  f"{times['theirs'][-1]:.1f} s, identical results: {same_results(a, b, s)}", flush=True)
    rate = {side: trials * 3600 / statistics.median(t) for side, t in times.items()}
    print(f"{'':28}{'wall s (median)':>16}{'trials/hour':>14}")
    print(f"{f'ours (processes:{workers})':28}{statistics.median(times['ours']):16.1f}{rate['ours']:14.0f}")
    print(f"{'theirs (process per trial)':28}{statistics.median(times['theirs']):16.1f}{rate['theirs']:14.0f}")
    print(f"ratio: {rate['ours'] / rate['theirs']:.2f}")


if __name__ == "__main__":
    main()
