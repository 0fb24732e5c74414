"""Losses from long-tailed classification that SubpopBench (Yang et al., ICML 2023) runs on
subpopulation shift: focal loss, LDAM, class-balanced loss and balanced softmax.

All but focal loss use the training split's class counts, which ``sampling`` records before
training (``CountsClasses``). None uses groups.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.core.registry import ALGORITHMS, Hparam, choice, fixed, log_uniform
from harness.models.algorithm import Algorithm, Batch
from harness.models.shared import CountsClasses, effective_number_weights


@ALGORITHMS.register("focal")
class Focal(Algorithm):
    """Focal loss: cross-entropy scaled by (1 - p_y)^γ, so well-fitted examples weigh little.

    Lin et al., ICCV 2017. No groups, no class counts."""

    # SubpopBench: gamma 1, 0.5 * 10^U(0, 1)
    hparams = {"gamma": Hparam(1.0, log_uniform(0.5, 5.0), "focusing exponent γ", low=0)}

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(self.predict(batch.x), batch.y, reduction="none")
        loss = ((1 - torch.exp(-ce)) ** self.hp["gamma"] * ce).mean()
        self.step(loss)
        return {"loss": loss.detach(), "avg_loss": ce.mean().detach()}


@ALGORITHMS.register("ldam")
class LDAM(CountsClasses):
    """LDAM: label-distribution-aware margins K / n_c^{1/4}, larger for rarer classes.

    Cao et al., NeurIPS 2019: cross-entropy of s·(logits - Δ_y e_y), the true class's logit
    lowered by its class margin Δ_c = K / n_c^{1/4}, K such that the largest margin is max_m.

    Optional deferred reweighting (DRW): from step ``drw_step`` on (-1: never) the loss weighs
    each class by the inverse of its effective number of samples with β = 0.9999, as Cao et al.
    do in the last stage of training. Logits are the linear head's, unnormalised (SubpopBench's
    version; Cao et al. normalise features and weights on CIFAR).
    """

    # SubpopBench: max_m 0.5, 10^U(-1, -0.1); scale 30, choice(10, 30). DRW is opt-in (Cao et al.
    # start it at 80% of training); SubpopBench does not tune it.
    hparams = {
        "max_m": Hparam(0.5, log_uniform(0.1, 10 ** -0.1), "largest class margin", low=0),
        "scale": Hparam(30.0, choice(10.0, 30.0), "logit scale s", low=0, low_open=True),
        "drw_step": Hparam(-1, fixed(-1), "step from which classes are reweighted (DRW); -1: never",
                           low=-1),
    }
    drw_beta = 0.9999

    def margins(self) -> torch.Tensor:
        raw = torch.where(self.class_counts > 0, self.class_counts.clamp(min=1) ** -0.25, 0.0)
        return raw * self.hp["max_m"] / raw.max()

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        logits = self.predict(batch.x)
        shifted = logits - F.one_hot(batch.y, self.num_classes) * self.margins()[batch.y].unsqueeze(1)
        deferred = 0 <= self.hp["drw_step"] <= step
        weight = effective_number_weights(self.class_counts, self.drw_beta) if deferred else None
        loss = F.cross_entropy(self.hp["scale"] * shifted, batch.y, weight=weight)
        self.step(loss)
        return {"loss": loss.detach()}


@ALGORITHMS.register("cb_loss")
class ClassBalancedLoss(CountsClasses):
    """Class-balanced loss: cross-entropy weighted by the inverse effective number of samples.

    Cui et al., CVPR 2019: class c weighs (1 - β) / (1 - β^n_c), the weights summing to the number
    of classes."""

    # SubpopBench: beta 0.9999, 1 - 10^U(-5, -2)
    hparams = {"beta": Hparam(0.9999, lambda rng: 1 - 10 ** rng.uniform(-5, -2),
                              "β of the effective number (1 - β^n) / (1 - β)", low=0, high=1, high_open=True)}

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        weights = effective_number_weights(self.class_counts, self.hp["beta"])[batch.y]
        ce = F.cross_entropy(self.predict(batch.x), batch.y, reduction="none")
        loss = (weights * ce).mean()
        self.step(loss)
        return {"loss": loss.detach(), "avg_loss": ce.mean().detach()}


@ALGORITHMS.register("balanced_softmax")
class BalancedSoftmax(CountsClasses):
    """Balanced softmax: trains on logits + log class prior, predicts with the plain logits.

    Ren et al., NeurIPS 2020: adding log n_c (the training split's log class prior) to the logits
    in training undoes the label shift between a long-tailed training set and a balanced test."""

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        loss = F.cross_entropy(self.predict(batch.x) + self.class_counts.log(), batch.y)
        self.step(loss)
        return {"loss": loss.detach()}
