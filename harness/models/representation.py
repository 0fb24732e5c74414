"""Representation diagnostics: RankMe (effective rank of an embedding) and linear CKA
(similarity of two representations of the same examples).

- RankMe (Garrido et al., 2023): ``exp(-Σ p_k log p_k)`` with ``p_k = σ_k / Σσ + 1e-7``, the
  singular values ``σ`` of the (uncentred) N × D embedding matrix; between 1 and min(N, D).
- Linear CKA (Kornblith et al., 2019): with X, Y centred over examples,
  ``‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F)``; 1 for identical features, invariant to orthogonal
  transforms and isotropic scaling of either side.
"""
from __future__ import annotations

import numpy as np

RANKME_EPS = 1e-7


def spectrum(features: np.ndarray) -> np.ndarray:
    """Singular values (descending, float64) of an N × D feature matrix."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.size == 0:
        return np.zeros(0)
    return np.linalg.svd(features, compute_uv=False)


def rankme(singular_values: np.ndarray) -> float:
    """RankMe from singular values (see :func:`spectrum`); NaN when there are none or all are 0."""
    s = np.asarray(singular_values, dtype=np.float64)
    total = s.sum()
    if len(s) == 0 or total <= 0:
        return float("nan")
    p = s / total + RANKME_EPS
    return float(np.exp(-(p * np.log(p)).sum()))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between two representations (N × D1, N × D2) of the same N examples, in the
    same order; NaN when either is constant over examples."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"linear CKA needs two feature matrices with one row per example each, got shapes "
                         f"{x.shape} and {y.shape}")
    x = x - x.mean(0)
    y = y - y.mean(0)
    denominator = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    if denominator == 0:
        return float("nan")
    return float(np.linalg.norm(y.T @ x) ** 2 / denominator)


def cka_matrix(features: list[np.ndarray]) -> np.ndarray:
    """Linear CKA between every pair of representations of the same examples (symmetric, 1 on
    the diagonal for non-constant features)."""
    n = len(features)
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = linear_cka(features[i], features[j])
    return out
