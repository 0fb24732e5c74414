"""DCI as disentanglement_lib computes it, two ways side by side in one process, like with like:
the same estimator (scikit-learn's ``GradientBoostingClassifier`` with its defaults, one per
factor, ``random_state`` 0), the same points (the first 2/3 to fit, the rest to score) and one
thread per fit on both sides.

- plain: a one-process loop over the factors, written out here as disentanglement_lib's
  ``_compute_importance_gbt`` does it (fit, ``feature_importances_``, accuracies);
- ours: :func:`harness.protocols.factors.dci` with ``--workers`` processes, the factors with most
  classes sent first. Its loky workers are started before the clock (a process starts them once
  and keeps them for its later calls: every evaluation of a run, every run of a collection); the
  time they took is printed.

The two must give identical numbers (the script fails otherwise). Latents: a run's stored
posterior means and factors of its test split (``--run``, its last evaluation) or, by default,
synthetic latents for dSprites factor classes (3, 6, 40, 32, 32; ``--factors``: the first few):
10 codes, each a random mixture dominated by one factor, plus noise. A boosting stage fits one tree per class, so the five fits
are unequal (orientation's 40 classes take the longest) and two workers cannot quite halve the
time. On a loaded machine the wall-clock ratio says little, so the script also prints the ratio
ours would reach on ``--cores`` free cores: the plain loop's CPU seconds per factor, dealt to the
workers in ours' order (each to the first free worker; more workers than cores share them). Last line: ``ratio: <plain seconds over ours>``
(wall clock; target >= 1.8 with 2 workers on 2 cores).

    python benchmarks/dci_cost.py [--points 1500] [--factors 5] [--workers 2] [--cores 2] [--run RUN_DIR] [--smoke]
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
from _sizing import parse
from sklearn.ensemble import GradientBoostingClassifier
from threadpoolctl import threadpool_limits

from harness.core.files import load_arrays
from harness.datasets.dsprites import SIZES
from harness.protocols.factors import DCI_TRAIN_FRACTION, dci, dci_from_importances

SMOKE = {"points": 90, "factors": 2}  # --smoke: seconds, the same path (a stage fits a tree per class)


def plain_dci(codes: np.ndarray, factors: np.ndarray) -> tuple[dict[str, float], list[float]]:
    """disentanglement_lib's loop: GradientBoostingClassifier() per factor, |feature_importances_|,
    training and test accuracy; one process, one thread. Also each factor's CPU seconds."""
    n_train = int(len(codes) * DCI_TRAIN_FRACTION)
    columns, train, test, cpu = [], [], [], []
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "more classes than half the points": small sets
        for k in range(factors.shape[1]):
            start = time.process_time()
            model = GradientBoostingClassifier(random_state=0).fit(codes[:n_train], factors[:n_train, k])
            columns.append(np.abs(model.feature_importances_))
            train.append(float(np.mean(model.predict(codes[:n_train]) == factors[:n_train, k])))
            test.append(float(np.mean(model.predict(codes[n_train:]) == factors[n_train:, k])))
            cpu.append(time.process_time() - start)
    scores = {**dci_from_importances(np.stack(columns, 1), float(np.mean(test))), "dci_i_train": float(np.mean(train))}
    return scores, cpu


def free_cores_seconds(cpu: list[float], classes: list[int], workers: int, cores: int) -> float:
    """How long ours' fits would take in ``workers`` processes on ``cores`` free cores: the factors,
    most classes first, each to the first free worker; running fits share the cores equally."""
    queue = sorted(range(len(cpu)), key=lambda k: -classes[k])
    running, queue = [cpu[k] for k in queue[:workers]], queue[workers:]
    clock = 0.0
    while running:
        speed = min(1.0, cores / len(running))
        first = min(running)
        clock += first / speed
        running = [t - first for t in running]
        running.remove(0.0)
        if queue:
            running.append(cpu[queue.pop(0)])
    return clock


def latents(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    if args.run:
        last = sorted((Path(args.run) / "predictions").glob("step_*.npz"))[-1]
        arrays = load_arrays(last)
        return (arrays["test.mu"][:args.points].astype(np.float64), arrays["test.factors"][:args.points],
                f"posterior means of {last}")
    rng = np.random.RandomState(0)
    sizes = np.array(SIZES[:args.factors])
    factors = np.stack([rng.randint(0, s, args.points) for s in sizes], 1)
    mixing = np.eye(len(sizes), 10) + 0.3 * rng.randn(len(sizes), 10)
    codes = (factors / (sizes - 1)) @ mixing + 0.05 * rng.randn(args.points, 10)
    return codes, factors, f"synthetic latents (10 codes mixing the first {len(sizes)} dSprites factors, noise 0.05)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1500, help="points, 2/3 to fit and 1/3 to score")
    parser.add_argument("--factors", type=int, default=len(SIZES), choices=range(1, len(SIZES) + 1),
                        help="synthetic latents: the first N dSprites factors")
    parser.add_argument("--workers", type=int, default=2, help="processes of ours (a run's threads)")
    parser.add_argument("--cores", type=int, default=2, help="the free cores the CPU-time estimate assumes")
    parser.add_argument("--run", default="", help="a disentanglement run folder whose test latents to use")
    args = parse(parser, SMOKE)
    codes, factors, what = latents(args)
    print(f"{what}: {len(codes)} points ({int(len(codes) * DCI_TRAIN_FRACTION)} to fit), factor classes "
          f"{[len(np.unique(f)) for f in factors.T]}; {os.cpu_count()} cores, 1-minute load {os.getloadavg()[0]:.2f}")
    start = time.perf_counter()
    two_classes = np.tile(np.arange(30) % 2, (args.workers, 1)).T  # a factor per worker
    dci(codes[:30], two_classes, workers=args.workers)  # starts the workers (once per process)
    started_s = time.perf_counter() - start
    start = time.perf_counter()
    plain, cpu = plain_dci(codes, factors)
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = dci(codes, factors, workers=args.workers)
    ours_s = time.perf_counter() - start
    for key in plain:
        print(f"{key}: plain {plain[key]:.6f}, ours {ours[key]:.6f}")
    if ours != plain:
        raise SystemExit(f"the numbers differ: plain {plain}, ours {ours}")
    classes = [len(np.unique(f[:int(len(codes) * DCI_TRAIN_FRACTION)])) for f in factors.T]
    free = free_cores_seconds(cpu, classes, args.workers, args.cores)
    print(f"CPU seconds per factor (plain loop): {', '.join(f'{c:.1f}' for c in cpu)}; on {args.cores} free "
          f"cores ours would take {free:.1f} s of their {sum(cpu):.1f}: ratio {sum(cpu) / free:.2f}")
    print(f"time: plain loop {plain_s:.1f} s, ours ({args.workers} processes) {ours_s:.1f} s (their start "
          f"before: {started_s:.1f} s); 1-minute load {os.getloadavg()[0]:.2f}")
    print(f"ratio: {plain_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
