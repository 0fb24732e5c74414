"""DCI as disentanglement_lib computes it, two ways side by side in one process, like with like:
the same estimator (scikit-learn's ``GradientBoostingClassifier`` with its defaults, one per
factor, ``random_state`` 0), the same points (the first 2/3 to fit, the rest to score) and one
thread per fit on both sides.

- plain: a one-process loop over the factors, written out here as disentanglement_lib's
  ``_compute_importance_gbt`` does it (fit, ``feature_importances_``, accuracies);
- ours: :func:`harness.protocols.factors.dci` with ``--workers`` processes. Each factor's fit is
  cut into pieces of boosting stages that a warm start continues exactly (the same trees), and a
  free worker gets the next piece of the fit with most work left: a stage fits one tree per class,
  so dSprites' five fits are unequal (orientation's 40 classes take a third of the time) and
  whole fits could not share two workers evenly. Its loky workers are started, and have run a
  fit, before the clock (a process starts them once and keeps them for its later calls: every
  evaluation of a run, every run of a collection); the time that took is printed.

The two must give identical numbers (the script fails otherwise). Latents: a run's stored
posterior means and factors of its test split (``--run``, its last evaluation) or, by default,
synthetic latents for dSprites factor classes (3, 6, 40, 32, 32; ``--factors``: the first few):
10 codes, each a random mixture dominated by one factor, plus noise. On a loaded machine the
wall-clock ratio says little, so the script also prints the best any schedule could do on
``--cores`` free cores: the plain loop's CPU seconds, the longest fit whole or all of them shared
evenly. Last line: ``ratio: <plain seconds over ours>`` (wall clock,
summed over ``--rounds`` rounds, each side first in every other; target >= 1.8 with 2 workers on 2 cores).

    python benchmarks/dci_cost.py [--points 1500] [--factors 5] [--workers 2] [--cores 2] [--rounds 4] [--run RUN_DIR] [--smoke]
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

SMOKE = {"points": 90, "factors": 2, "rounds": 1}  # --smoke: seconds, the same path (a stage fits a tree per class)


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
    parser.add_argument("--rounds", type=int, default=4, help="rounds of both sides, each side first in every other")
    parser.add_argument("--run", default="", help="a disentanglement run folder whose test latents to use")
    args = parse(parser, SMOKE)
    codes, factors, what = latents(args)
    print(f"{what}: {len(codes)} points ({int(len(codes) * DCI_TRAIN_FRACTION)} to fit), factor classes "
          f"{[len(np.unique(f)) for f in factors.T]}; {os.cpu_count()} cores, 1-minute load {os.getloadavg()[0]:.2f}")
    start = time.perf_counter()
    dci(codes[:60], factors[:60], workers=args.workers)  # starts the workers, each imports and fits
    started_s = time.perf_counter() - start
    plain_s, ours_s = [], []
    for round_ in range(args.rounds):  # the sides take turns going first: a machine's speed drifts by 10% and more
        for side in ("plain", "ours")[::1 if round_ % 2 == 0 else -1]:
            start = time.perf_counter()
            if side == "plain":
                plain, cpu = plain_dci(codes, factors)
                plain_s.append(time.perf_counter() - start)
            else:
                ours = dci(codes, factors, workers=args.workers)
                ours_s.append(time.perf_counter() - start)
        if ours != plain:
            raise SystemExit(f"the numbers differ: plain {plain}, ours {ours}")
    for key in plain:
        print(f"{key}: plain {plain[key]:.6f}, ours {ours[key]:.6f}")
    best = max(max(cpu), sum(cpu) / args.cores)
    print(f"CPU seconds per factor (plain loop, last round): {', '.join(f'{c:.1f}' for c in cpu)}; no schedule "
          f"on {args.cores} free cores takes less than {best:.1f} s of their {sum(cpu):.1f}: ratio at most "
          f"{sum(cpu) / best:.2f}")
    print(f"seconds per round: plain loop {', '.join(f'{t:.1f}' for t in plain_s)}; ours ({args.workers} processes) "
          f"{', '.join(f'{t:.1f}' for t in ours_s)} (their start and a first fit before: {started_s:.1f} s); "
          f"1-minute load {os.getloadavg()[0]:.2f}")
    print(f"ratio per round: {', '.join(f'{p / o:.2f}' for p, o in zip(plain_s, ours_s))}")
    print(f"ratio: {sum(plain_s) / sum(ours_s):.2f}")


if __name__ == "__main__":
    main()
