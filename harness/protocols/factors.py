"""The arithmetic of the disentanglement protocol: DCI, MIG and factor probes, on codes (n, D)
and integer factor classes (n, K).

- DCI (Eastwood & Williams, 2018) as disentanglement_lib computes it: one scikit-learn
  ``GradientBoostingClassifier`` per factor with its default settings (100 stages of depth-3
  trees, learning rate 0.1; ``random_state`` fixed, so a recomputation gives the same numbers),
  fitted on the first 2/3 of the points and scored on the last 1/3 (disentanglement_lib's 10,000
  and 5,000 points in the same proportion); importance of code d for factor k =
  ``feature_importances_``; D = Σ_d ρ_d (1 − H_K(P_d)), ρ_d the code's share of all importance;
  C = mean over factors of 1 − H_D; I = mean test accuracy (``dci_i``) and mean training
  accuracy (``dci_i_train``). The per-factor fits run in ``workers`` processes, one thread each;
  a stage fits a tree per class, so the fits are unequal and the one that crosses a worker's even
  share is cut into pieces of stages a warm start continues (``harness.core.chains``): the
  numbers are those of a plain loop, the time about the plain loop's over ``workers``
  (``benchmarks/dci_cost.py``). No faster estimator: scikit-learn's histogram boosting read DCI-D
  0.02-0.04 above the reference on well-disentangled codes, beyond the 0.01 a substitute may
  differ (the agreement test measured it until it was removed, commit 3363f34).
- MIG (Chen et al., 2018), as disentanglement_lib: each code discretised into 20 equal-width bins,
  mutual information with each factor, gap between the two most informative codes over the
  factor's entropy, averaged over factors.
- Factor probes: a multinomial logistic regression per factor, trained on one set of codes and
  scored on another (under a correlation shift: trained on correlated codes).
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from harness.core.chains import run_chains, wrap_cuts

MIG_BINS = 20
DCI_TRAIN_FRACTION = 2 / 3
STAGES = 100  # GradientBoostingClassifier's default n_estimators


def boost(model: Any, piece: tuple) -> Any:
    """One piece of a factor's importance model on one thread: the boosting fit continued (warm
    start: the same trees as one uninterrupted fit) up to the piece's stage; after the last stage,
    (importance of each code, training accuracy, test accuracy; NaN without test points)."""
    from sklearn.ensemble import GradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    x_train, y_train, x_test, y_test, seed, stages = piece
    with threadpool_limits(1), warnings.catch_warnings():
        # "more classes than half the points": expected on small sets
        warnings.simplefilter("ignore", UserWarning)
        model = model or GradientBoostingClassifier(random_state=seed, warm_start=True)
        model.set_params(n_estimators=stages).fit(x_train, y_train)
        if stages < STAGES:
            return model
        importance = np.abs(model.feature_importances_)
        test = float(model.score(x_test, y_test)) if len(x_test) else float("nan")
        return importance, float(model.score(x_train, y_train)), test


def _entropy(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy in base ``base`` along the last axis of probabilities (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(-1) / np.log(base)


def dci(codes: np.ndarray, factors: np.ndarray, workers: int = 1, seed: int = 0) -> dict[str, float]:
    """DCI disentanglement, completeness and informativeness (test and training accuracy), the
    per-factor fits in ``workers`` processes (1: in this one). Factors with a single value among
    the training points are left out (nothing to predict)."""
    n_train = int(len(codes) * DCI_TRAIN_FRACTION)
    classes = {k: len(np.unique(factors[:n_train, k])) for k in range(factors.shape[1])}
    # a boosting stage fits a tree per class (one for two classes), so the fits are unequal: a fit
    # is cut where the workers' even shares end, into pieces of stages a warm start continues
    trees = {k: n if n > 2 else 1 for k, n in classes.items() if n >= 2}
    chains, costs = [], []
    for (k, per_stage), cuts in zip(trees.items(), wrap_cuts([t * STAGES for t in trees.values()], workers)):
        y = factors[:, k]
        stops = sorted({min(STAGES, max(1, round(f * STAGES))) for f in cuts})
        chains.append([(codes[:n_train], y[:n_train], codes[n_train:], y[n_train:], seed, stop) for stop in stops])
        costs.append([per_stage * float(stop - start) for start, stop in zip([0, *stops], stops)])
    fits = run_chains(boost, chains, costs, workers)
    return {**dci_from_importances(np.stack([f[0] for f in fits], 1), float(np.mean([f[2] for f in fits]))),
            "dci_i_train": float(np.mean([f[1] for f in fits]))}


def dci_from_importances(importance: np.ndarray, informativeness: float) -> dict[str, float]:
    """D and C from an importance matrix R (codes × factors), I given."""
    num_codes, num_factors = importance.shape
    total = importance.sum()
    per_code = importance.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_code = np.where(per_code[:, None] > 0, importance / per_code[:, None], 0.0)
        p_factor = importance / importance.sum(0, keepdims=True)
    disentanglement = 1 - _entropy(p_code, num_factors) if num_factors > 1 else np.ones(num_codes)
    completeness = 1 - _entropy(p_factor.T, num_codes)
    weights = per_code / total if total > 0 else np.zeros(num_codes)
    return {"dci_d": float((weights * disentanglement).sum()), "dci_c": float(np.mean(completeness)),
            "dci_i": informativeness}


def discretize(codes: np.ndarray, bins: int = MIG_BINS) -> np.ndarray:
    """Each code into ``bins`` equal-width bins over its own range (disentanglement_lib's
    ``np.digitize(x, np.histogram(x, bins)[1][:-1])``, values 1..bins)."""
    return np.stack([np.digitize(c, np.histogram(c, bins)[1][:-1]) for c in codes.T], 1)


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = MIG_BINS) -> tuple[float, list[float]]:
    """Mean MIG and the gap of each factor (NaN for a factor with one value: no entropy)."""
    from sklearn.metrics import mutual_info_score

    binned = discretize(codes, bins)
    gaps = []
    for k in range(factors.shape[1]):
        y = factors[:, k]
        entropy = mutual_info_score(y, y)
        if entropy <= 0:
            gaps.append(float("nan"))
            continue
        mi = np.sort([mutual_info_score(y, binned[:, d]) for d in range(binned.shape[1])])[::-1]
        gaps.append(float((mi[0] - (mi[1] if len(mi) > 1 else 0.0)) / entropy))
    return float(np.nanmean(gaps)) if not np.isnan(gaps).all() else float("nan"), gaps


def probe_accuracy(train_codes: np.ndarray, train_factors: np.ndarray, codes: np.ndarray,
                   factors: np.ndarray) -> float:
    """Mean over factors of the accuracy of a logistic regression (on standardised codes) trained
    on the first set and scored on the second; a factor constant in training predicts its value."""
    from sklearn.linear_model import LogisticRegression

    mean, std = train_codes.mean(0), train_codes.std(0)
    std = np.where(std > 0, std, 1.0)
    x_train, x = (train_codes - mean) / std, (codes - mean) / std
    accuracies = []
    for k in range(factors.shape[1]):
        y_train = train_factors[:, k]
        if len(np.unique(y_train)) < 2:
            accuracies.append(float(np.mean(factors[:, k] == y_train[0])))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = LogisticRegression(max_iter=300).fit(x_train, y_train)
        accuracies.append(float(model.score(x, factors[:, k])))
    return float(np.mean(accuracies))
