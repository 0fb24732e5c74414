"""Our DCI against a plain re-computation with scikit-learn's ``GradientBoostingClassifier`` per
factor (disentanglement_lib's estimator, its defaults: 100 stages of depth-3 trees), on the same
latents and the same points, side by side in one process.

Ours (:func:`harness.protocols.factors.dci`) fits a ``HistGradientBoostingClassifier`` of the same
shape (100 iterations, depth 3): histogram trees bin each code into at most 255 values once,
instead of sorting at every split, so a 40-class factor (orientation) costs seconds rather than
minutes. Both fit on the first 2/3 of the points and score on the rest; D and C come from the same
importance arithmetic (``dci_from_importances``).

Latents: a run's stored posterior means and factors of its test split (``--run``, its last
evaluation), or, by default, synthetic latents for dSprites factor classes: 10 codes, each a
random mixture dominated by one factor, plus noise. Both fit with ``--threads`` BLAS/OpenMP
threads (ours is OpenMP-parallel, the reference is not). Last line:
``ratio: <GradientBoostingClassifier seconds over ours>`` (target >= 5, with D within 0.02).

    python benchmarks/dci_cost.py [--points 1500] [--run RUN_DIR] [--smoke]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _sizing import parse
from sklearn.ensemble import GradientBoostingClassifier

from harness.core.files import load_arrays
from harness.datasets.dsprites import SIZES
from harness.protocols.factors import DCI_TRAIN_FRACTION, dci, dci_from_importances

SMOKE = {"points": 90}  # --smoke: seconds, the same path


def reference_dci(codes: np.ndarray, factors: np.ndarray) -> dict[str, float]:
    """disentanglement_lib's recipe: GradientBoostingClassifier() per factor, |feature_importances_|."""
    n_train = int(len(codes) * DCI_TRAIN_FRACTION)
    columns, accuracies = [], []
    for k in range(factors.shape[1]):
        model = GradientBoostingClassifier().fit(codes[:n_train], factors[:n_train, k])
        columns.append(np.abs(model.feature_importances_))
        accuracies.append(model.score(codes[n_train:], factors[n_train:, k]))
    return dci_from_importances(np.stack(columns, 1), float(np.mean(accuracies)))


def latents(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    if args.run:
        last = sorted((Path(args.run) / "predictions").glob("step_*.npz"))[-1]
        arrays = load_arrays(last)
        return (arrays["test.mu"][:args.points].astype(np.float64), arrays["test.factors"][:args.points],
                f"posterior means of {last}")
    rng = np.random.RandomState(0)
    factors = np.stack([rng.randint(0, s, args.points) for s in SIZES], 1)
    mixing = np.eye(len(SIZES), 10) + 0.3 * rng.randn(len(SIZES), 10)
    codes = (factors / (np.array(SIZES) - 1)) @ mixing + 0.05 * rng.randn(args.points, 10)
    return codes, factors, "synthetic latents (10 codes mixing the 5 dSprites factors, noise 0.05)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1500, help="points, 2/3 to fit and 1/3 to score")
    parser.add_argument("--run", default="", help="a disentanglement run folder whose test latents to use")
    args = parse(parser, SMOKE)
    codes, factors, what = latents(args)
    start = time.perf_counter()
    ours = dci(codes, factors)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    reference = reference_dci(codes, factors)
    reference_s = time.perf_counter() - start
    print(f"{what}: {len(codes)} points ({int(len(codes) * DCI_TRAIN_FRACTION)} to fit), "
          f"factor classes {[len(np.unique(f)) for f in factors.T]}, {args.threads} thread(s)")
    for key in ("dci_d", "dci_c", "dci_i"):
        print(f"{key}: ours {ours[key]:.4f}, GradientBoostingClassifier {reference[key]:.4f}, "
              f"difference {abs(ours[key] - reference[key]):.4f}")
    print(f"time: ours {ours_s:.1f} s, GradientBoostingClassifier {reference_s:.1f} s")
    print(f"ratio: {reference_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
