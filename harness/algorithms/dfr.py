"""Deep feature reweighting (Kirichenko et al., ICLR 2023, "Last layer re-training is sufficient
for robustness to spurious correlations"), the DFR^Tr_Val variant.

The backbone and a linear head train by ERM on the training split for the run's steps. Before
each evaluation the last layer is re-fitted on the backbone's features of the *held-out half of
validation* (``Algorithm.held_out``: the run hands it half of each validation group, drawn by the
run's seed): features standardised on that half, then an L1-penalised logistic regression on each
of ``retrains`` group-balanced draws (every group subsampled to the smallest group's size, without
replacement), whose weights are averaged, as the paper does. Predictions use that head. The other
half of validation is all that the stored val predictions, and so every selection rule, see:
there the paper's choice of C (its grid: ``C``'s choices) is the choice among hparam draws.
Groups are the run's group source's: annotated groups as in the paper, or discovered ones.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from harness.core.errors import HarnessError
from harness.core.registry import ALGORITHMS, Hparam, choice, fixed
from harness.data.dataset import chunks
from harness.models.algorithm import Algorithm, Batch

C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)  # the paper's grid of inverse L1 strengths


def balanced_draw(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions of a group-balanced subsample: from every group present, as many examples as
    the smallest group has, drawn without replacement."""
    groups = [np.flatnonzero(g == k) for k in np.unique(g)]
    smallest = min(len(members) for members in groups)
    return np.sort(np.concatenate([rng.choice(members, smallest, replace=False) for members in groups]))


def fit_last_layer(features: np.ndarray, y: np.ndarray, g: np.ndarray, num_classes: int, c: float, retrains: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """DFR's head on raw features: (weight (classes, dim), bias (classes,)) of the averaged
    logistic regressions, the standardisation folded in."""
    mean, std = features.mean(0), features.std(0) + 1e-8
    z = (features - mean) / std
    rng = np.random.default_rng(seed)
    weight, bias = np.zeros((num_classes, z.shape[1])), np.zeros(num_classes)
    for i in range(retrains):
        rows = balanced_draw(g, rng)
        classes = np.unique(y[rows])
        if len(classes) < 2:
            raise HarnessError(f"dfr: a group-balanced draw of the held-out validation half has only class "
                               f"{classes.tolist()}; DFR needs at least two classes in it")
        model = LogisticRegression(l1_ratio=1.0, C=c, solver="liblinear", random_state=seed + i)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(z[rows], y[rows])
        w, b = np.zeros((num_classes, z.shape[1])), np.full(num_classes, -1e4)  # an absent class: never predicted
        b[classes] = 0.0
        if len(classes) == 2:  # one decision function, the second class's; the first scores 0
            w[classes[1]], b[classes[1]] = model.coef_[0], model.intercept_[0]
        else:  # one-vs-rest decision functions as logits (the same argmax)
            w[classes], b[classes] = model.coef_, model.intercept_
        weight += w / retrains
        bias += b / retrains
    return weight / std, bias - (weight / std) @ mean


@ALGORITHMS.register("dfr")
class DFR(Algorithm):
    """DFR: ERM features, the last layer re-fitted on group-balanced draws of held-out validation examples."""

    needs_groups = True
    holds_out_validation = True
    hparams = {
        "C": Hparam(1.0, choice(*C_GRID), "inverse L1 strength of the last layer's logistic regression",
                    low=0, low_open=True),
        "retrains": Hparam(10, fixed(10), "group-balanced draws whose fitted heads are averaged", low=1),
    }

    def build(self, backbone) -> None:
        super().build(backbone)
        width = self.classifier.in_features
        self.register_buffer("head_weight", torch.zeros(self.num_classes, width))
        self.register_buffer("head_bias", torch.zeros(self.num_classes))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        with self.precision():
            loss = F.cross_entropy(self.classifier(self.featurizer(batch.x)).float(), batch.y)
        self.step(loss)
        return {"loss": loss.detach()}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fitted:  # before the first re-fit (and without held-out examples): the ERM head
            return super().predict(x)
        with self.precision():
            features = self.featurizer(x)
        return features.float() @ self.head_weight.T + self.head_bias

    @torch.no_grad()
    def before_evaluation(self) -> None:
        if self.held_out is None:
            return
        split = self.held_out.split
        features = torch.cat([self.featurizer(split.inputs(idx.to(split.y.device))).float().cpu()
                              for idx in chunks(len(split), 1024)]).numpy().astype(np.float64)
        weight, bias = fit_last_layer(features, split.y.cpu().numpy(), self.held_out.g.cpu().numpy(),
                                      self.num_classes, self.hp["C"], self.hp["retrains"], self.held_out.seed)
        self.head_weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        self.head_bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        self.fitted.fill_(True)
