"""The arithmetic of the disentanglement protocol: DCI, MIG and factor probes, on codes (n, D)
and integer factor classes (n, K).

- DCI (Eastwood & Williams, 2018), as disentanglement_lib computes it but with histogram
  gradient boosting: one ``HistGradientBoostingClassifier`` per factor (100 iterations of depth-3
  trees, as its ``GradientBoostingClassifier``) on the first 2/3 of the points, importance of code d for factor k = the loss reduction of the splits on d (summed over
  its trees, normalised per factor, as ``feature_importances_`` is); D = Σ_d ρ_d (1 − H_K(P_d)),
  ρ_d the code's share of all importance; C = mean over factors of 1 − H_D; I = mean test
  accuracy on the last 1/3.
- MIG (Chen et al., 2018), as disentanglement_lib: each code discretised into 20 equal-width bins,
  mutual information with each factor, gap between the two most informative codes over the
  factor's entropy, averaged over factors.
- Factor probes: a multinomial logistic regression per factor, trained on one set of codes and
  scored on another (under a correlation shift: trained on correlated codes).
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # scikit-learn is imported where a score is computed, not by `harness list`
    from sklearn.ensemble import HistGradientBoostingClassifier

MIG_BINS = 20
DCI_TRAIN_FRACTION = 2 / 3


def gain_importances(model: HistGradientBoostingClassifier, num_features: int) -> np.ndarray:
    """Per feature, the summed loss reduction (gain) of every split on it, over all trees,
    normalised to sum 1 (zeros when no tree splits)."""
    out = np.zeros(num_features)
    for trees in model._predictors:  # iterations × (one tree per class, or one for two classes)
        for tree in trees:
            nodes = tree.nodes[tree.nodes["is_leaf"] == 0]
            np.add.at(out, nodes["feature_idx"], nodes["gain"])
    total = out.sum()
    return out / total if total > 0 else out


def _entropy(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy in base ``base`` along the last axis of probabilities (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(-1) / np.log(base)


def dci(codes: np.ndarray, factors: np.ndarray, max_iter: int = 100, seed: int = 0) -> dict[str, float]:
    """DCI disentanglement, completeness and informativeness. Factors with a single value among
    the training points are left out (nothing to predict)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    n_train = int(len(codes) * DCI_TRAIN_FRACTION)
    num_codes = codes.shape[1]
    columns, accuracies = [], []
    for k in range(factors.shape[1]):
        y = factors[:, k]
        if len(np.unique(y[:n_train])) < 2:
            continue
        model = HistGradientBoostingClassifier(max_iter=max_iter, max_depth=3, early_stopping=False,
                                               random_state=seed)
        with warnings.catch_warnings():  # "more classes than half the points": expected on small sets
            warnings.simplefilter("ignore", UserWarning)
            model.fit(codes[:n_train], y[:n_train])
        columns.append(gain_importances(model, num_codes))
        accuracies.append(model.score(codes[n_train:], y[n_train:]) if n_train < len(codes) else np.nan)
    return dci_from_importances(np.stack(columns, 1), float(np.mean(accuracies)))


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
