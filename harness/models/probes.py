"""Probes of frozen features: a logistic-regression linear probe whose regularisation is chosen
on the validation split, and a k-nearest-neighbour classifier.

:func:`probe_layer` probes one layer's features for one task and returns the arrays a probe
run stores: per split the labels and both probes' predicted classes, the validation
predictions of every candidate C (so that the choice of C can be recomputed) and the feature
spectrum (for RankMe). Selection reads the train and validation splits only; the test split is
read once the probe is fixed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from harness.models.logistic import LogisticPath, fit_path
from harness.models.representation import spectrum

DEFAULT_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass
class LinearProbe:
    """Standardisation (fitted on train) and the logistic regressions of every candidate C, one
    of them chosen."""

    mean: np.ndarray
    scale: np.ndarray
    path: LogisticPath
    cs: np.ndarray              # candidate Cs, ascending
    val_predictions: np.ndarray  # (len(cs), n_val): each candidate's predicted classes
    chosen: int                 # index into cs

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.path.predict((x - self.mean) / self.scale, self.chosen).astype(np.int64)


def choose_c(val_predictions: np.ndarray, val_y: np.ndarray) -> int:
    """The candidate with the best validation accuracy; ties go to the smaller C (the
    stronger regularisation)."""
    return int(np.argmax((val_predictions == val_y[None]).mean(1)))


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                 cs: Sequence[float] = DEFAULT_CS, max_iter: int = 1000,
                 device: torch.device | str = "cpu") -> LinearProbe:
    """Fit a logistic regression on standardised train features for every C (all at once:
    ``harness.models.logistic``) and keep the one with the best validation accuracy."""
    cs = np.sort(np.asarray(cs, dtype=np.float64))
    train_x = np.asarray(train_x, dtype=np.float64)
    mean, scale = train_x.mean(0), train_x.std(0)
    scale[scale == 0] = 1.0  # a constant feature stays 0, as scikit-learn's StandardScaler leaves it
    path = fit_path((train_x - mean) / scale, train_y, cs, max_iter, device=device)
    val_predictions = path.predict((np.asarray(val_x, dtype=np.float64) - mean) / scale).astype(np.int64)
    chosen = choose_c(val_predictions, np.asarray(val_y))
    return LinearProbe(mean, scale, path, cs, val_predictions, chosen)


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Majority vote of the k nearest train examples by cosine similarity."""
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_x)), metric="cosine", algorithm="brute")
    return knn.fit(train_x, train_y).predict(x).astype(np.int64)


def probe_layer(features: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], cs: Sequence[float] = DEFAULT_CS,
                k: int = 20, max_iter: int = 1000, device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Both probes of one layer for one task. ``features`` and ``labels`` map ``train``,
    ``val`` and ``test`` to arrays; the test split is read only after C is chosen. Returns
    ``<split>.y``, ``<split>.probe``, ``<split>.knn`` (val and test), ``<split>.spectrum``,
    ``cs`` and ``val.probe_by_c``."""
    train_x, train_y = features["train"], labels["train"]
    val_x, val_y = features["val"], labels["val"]
    probe = linear_probe(train_x, train_y, val_x, val_y, cs, max_iter, device)
    out = {"cs": probe.cs, "val.probe_by_c": probe.val_predictions}
    for split in ("train", "val", "test"):
        x = features[split]
        out[f"{split}.y"] = np.asarray(labels[split], dtype=np.int64)
        out[f"{split}.probe"] = probe.predict(x)
        if split != "train":
            out[f"{split}.knn"] = knn_predict(train_x, train_y, x, k)
        out[f"{split}.spectrum"] = spectrum(x)
    return out
