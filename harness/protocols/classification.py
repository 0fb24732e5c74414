"""Every reported number is computed here, from labels, predictions and group indices.

Conventions: an empty group has accuracy ``None`` and is left out of the worst group (a group
with no test example says nothing about the model); examples with group -1 (unknown) count in
the averages but in no group.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    return float(np.mean(y_true == y_pred)) if len(y_true) else None


def group_accuracies(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray,
                     num_groups: int) -> list[float | None]:
    """Accuracy of each group 0..num_groups-1; None for an empty group."""
    correct = (y_true == y_pred)
    return [accuracy_of(correct[groups == g]) for g in range(num_groups)]


def accuracy_of(correct: np.ndarray) -> float | None:
    return float(correct.mean()) if len(correct) else None


def worst(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def weighted_average(values: Sequence[float | None], weights: Sequence[float]) -> float | None:
    """Average of per-group accuracies weighted by (e.g. training) group sizes, as WILDS'
    ``adj_acc_avg`` for Waterbirds. Empty groups are left out."""
    pairs = [(v, w) for v, w in zip(values, weights) if v is not None]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, groups: np.ndarray | None,
                           num_groups: int, num_classes: int,
                           group_weights: Sequence[float] | None = None) -> dict:
    """Average, worst-group, per-group, worst-class and balanced accuracy, and the mean
    cross-entropy, of predicted class probabilities ``probs`` (n × C)."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    y_pred = probs.argmax(1)
    class_acc = group_accuracies(y_true, y_pred, y_true, num_classes)
    present = [a for a in class_acc if a is not None]
    picked = probs[np.arange(len(y_true)), y_true] if len(y_true) else np.zeros(0)
    out = {
        "n": int(len(y_true)),
        "avg_acc": accuracy(y_true, y_pred),
        "worst_class_acc": worst(class_acc),
        "balanced_acc": float(np.mean(present)) if present else None,
        "class_acc": class_acc,
        "loss": float(-np.mean(np.log(np.clip(picked, 1e-12, None)))) if len(y_true) else None,
    }
    if groups is not None and num_groups > 0 and (np.asarray(groups) >= 0).any():
        group_acc = group_accuracies(y_true, y_pred, np.asarray(groups), num_groups)
        out["group_acc"] = group_acc
        out["group_n"] = np.bincount(np.asarray(groups)[np.asarray(groups) >= 0],
                                     minlength=num_groups).tolist()
        out["worst_group_acc"] = worst(group_acc)
        if group_weights is not None:
            out["adjusted_avg_acc"] = weighted_average(group_acc, group_weights)
    return out


def overlapping_worst_group_acc(y_true: np.ndarray, y_pred: np.ndarray, memberships: np.ndarray) -> float | None:
    """Worst accuracy over overlapping groups (member of attribute k, label), one pair per column
    k of the 0/1 ``memberships`` matrix: WILDS' CivilComments worst group, where a comment can
    mention several identities. Empty groups are left out (WILDS counts them as 0; the real test
    set has none)."""
    y_true, y_pred, memberships = np.asarray(y_true), np.asarray(y_pred), np.asarray(memberships)
    accs: list[float | None] = []
    for k in range(memberships.shape[1]):
        member = memberships[:, k] == 1
        accs += group_accuracies(y_true[member], y_pred[member], y_true[member], int(y_true.max(initial=0)) + 1)
    return worst(accs)
