"""Learning from Failure (Nam et al., NeurIPS 2020)."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.registry import ALGORITHMS, Hparam, uniform
from harness.models.algorithm import Algorithm, Batch


def generalized_cross_entropy(logits: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    """GCE (Zhang & Sabuncu, 2018), (1 - p_y^q) / q per example: its gradient is p_y^q times
    cross-entropy's, so examples that are already easy dominate, which makes a model biased.
    p_y^q is computed as exp(q log p_y): ``softmax ** q`` has an infinite gradient (NaN weights)
    once a confidently wrong example's p_y underflows to 0, as on noisy labels."""
    log_p_y = logits.log_softmax(1).gather(1, y.unsqueeze(1)).squeeze(1)
    return (1 - torch.exp(q * log_p_y)) / q


@ALGORITHMS.register("lff")
class LfF(Algorithm):
    """LfF: a GCE-trained biased model; the debiased one weighs examples by relative difficulty.

    Nam et al., NeurIPS 2020: the debiased model's cross-entropy weighs each example by
    W = L_B / (L_B + L_D). L_B and L_D are per-example exponential moving averages (ema = 0.7, the authors' code) of the
    two models' cross-entropies, each divided by the largest average among training examples of
    the same class. No groups. Both networks train on every batch with one optimizer (Adam's
    per-parameter updates make that the same as one optimizer each); the debiased model predicts.
    """

    # SubpopBench: LfF_q 0.7, U(0.05, 0.95)
    hparams = {"q": Hparam(0.7, uniform(0.05, 0.95), "GCE exponent q of the biased model", low=0, low_open=True, high=1)}
    ema = 0.7

    def __init__(self, backbone: Callable[[], nn.Module], num_classes: int, num_groups: int,
                 hparams: dict[str, Any], train_size: int):
        super().__init__(backbone, num_classes, num_groups, hparams, train_size)
        self.register_buffer("labels", torch.zeros(train_size, dtype=torch.long))
        self.register_buffer("seen", torch.zeros(train_size, dtype=torch.bool))
        self.register_buffer("loss_ema", torch.zeros(2, train_size))  # row 0: biased model, 1: debiased

    def build(self, backbone: Callable[[], nn.Module]) -> None:
        super().build(backbone)
        features = backbone()
        self.biased = nn.Sequential(features, nn.Linear(features.n_outputs, self.num_classes))

    def sampling(self, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        self.labels.copy_(y)  # the per-class maxima run over the whole training split
        return super().sampling(y, g)

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        with self.precision():
            biased_logits = self.biased(batch.x).float()
        logits = self.predict(batch.x)
        ce_biased = F.cross_entropy(biased_logits, batch.y, reduction="none")
        ce = F.cross_entropy(logits, batch.y, reduction="none")
        weight = self.relative_difficulty(batch.index, batch.y, torch.stack([ce_biased, ce]).detach())
        gce = generalized_cross_entropy(biased_logits, batch.y, self.hp["q"])
        loss = gce.mean() + (weight * ce).mean()
        self.step(loss)
        return {"loss": loss.detach(), "gce": gce.mean().detach(), "weight": weight.mean()}

    @torch.no_grad()
    def relative_difficulty(self, index: torch.Tensor, y: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """Update the two models' loss averages of these examples; return L_B / (L_B + L_D)."""
        decay = torch.where(self.seen[index], self.ema, 0.0)  # an example's first loss starts its average
        self.loss_ema[:, index] = decay * self.loss_ema[:, index] + (1 - decay) * losses
        self.seen[index] = True
        class_max = torch.zeros(2, self.num_classes, device=losses.device).scatter_reduce(
            1, self.labels.expand(2, -1), self.loss_ema, "amax")
        biased, debiased = self.loss_ema[:, index] / class_max[:, y].clamp(min=1e-12)
        return biased / (biased + debiased + 1e-8)
