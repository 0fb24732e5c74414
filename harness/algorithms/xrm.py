"""XRM, cross-risk minimisation (Pezeshki et al., ICML 2024): environment discovery without
any annotation.

Two twin networks of the same architecture. Each training example is assigned once, with
probability 1/2, to twin A or twin B; both twins see every batch. An example's *held-in*
prediction comes from its own twin, its *held-out* prediction from the sibling. The loss is the
class-balanced cross-entropy (sum over the batch's classes of that class's mean loss) of the
held-in predictions against the stored labels. After every step each example of the batch has
its stored label replaced by the held-out prediction with probability (C·p − 1)/(C − 1), p the
held-out top probability and C the number of classes; flips persist and revert the same way.
Training runs a fixed number of steps, without early stopping. Once trained, an example is in
environment 1 when either twin misclassifies it under its *original* label.

Train the twins long. The flip rate keeps climbing long after the twins' accuracy has settled,
and with it the quality of the environments: on ``background_fashion_mnist`` (20k examples,
batch 128, minority 5%) 2000 steps flip about 3.8% of the labels and find three quarters of the
minority, 15000 steps (about 100 epochs; the official code trains Waterbirds' twins for 33-133)
flip 4.5-5.0% and find 91-100% of it (``docs/notes/discovery-xrm-vs-jtt.md``). The number of
steps is one more hyperparameter for the annotation-free rule: of several discoveries, keep the
one with the largest final flip rate.

The twins run one after the other, each on its held-in examples with gradients and on its
held-out ones without: on CPU this is cheaper than stacking their parameters and running them
under ``torch.func.vmap`` (measured on the default MLP: 1.7x an ERM step against 2.3x; see
``benchmarks/xrm_cost.py`` for the whole-run cost), and it works for backbones with BatchNorm.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.registry import ALGORITHMS, Hparam, choice, log_uniform
from harness.models.algorithm import Batch, Discoverer
from harness.models.shared import group_means


def flip_probability(probs: torch.Tensor) -> torch.Tensor:
    """(C·p − 1)/(C − 1) for p the top probability of each row of ``probs`` (n × C): 0 for a
    uniform (unsure) prediction, 1 for a certain one."""
    num_classes = probs.shape[1]
    return ((num_classes * probs.max(1).values - 1) / (num_classes - 1)).clamp(0, 1)


def class_balanced_loss(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Sum over the classes present in the batch of the mean cross-entropy of that class."""
    return group_means(F.cross_entropy(logits, y, reduction="none"), y, num_classes)[0].sum()


@ALGORITHMS.register("xrm")
class XRM(Discoverer):
    """XRM: twins that imitate each other's confident held-out mistakes; discovers environments."""

    hparams = {
        "lr": Hparam(1e-3, log_uniform(1e-4, 1e-2), "learning rate", low=0, low_open=True),
        "weight_decay": Hparam(0.0, log_uniform(1e-6, 1e-3), "L2 penalty", low=0),
        "batch_size": Hparam(128, choice(32, 64, 128, 256), "examples per step", low=1),
    }

    def __init__(self, backbone: Callable[[], nn.Module], num_classes: int, num_groups: int,
                 hparams: dict[str, Any], train_size: int):
        super().__init__(backbone, num_classes, num_groups, hparams, train_size)
        # Per-example state, as buffers so that checkpoints carry it: the twin each example
        # belongs to, its original label and its current (possibly flipped) label. Labels are
        # filled in when an example is first drawn (-1 until then).
        self.register_buffer("assign", torch.randint(0, 2, (train_size,)))
        self.register_buffer("original", torch.full((train_size,), -1, dtype=torch.long))
        self.register_buffer("labels", torch.full((train_size,), -1, dtype=torch.long))

    def build(self, backbone: Callable[[], nn.Module]) -> None:
        self.twins = nn.ModuleList()
        for _ in range(2):
            features = backbone()
            self.twins.append(nn.Sequential(features, nn.Linear(features.n_outputs, self.num_classes)))

    def twin_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Both twins' logits, 2 × n × C."""
        with self.precision():
            return torch.stack([twin(x) for twin in self.twins]).float()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the twins' mean class probabilities (what the run loop evaluates)."""
        return self.twin_logits(x).softmax(2).mean(0).log()

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        index = batch.index
        unseen = self.original[index] < 0
        self.original[index[unseen]] = batch.y[unseen]
        self.labels[index[unseen]] = batch.y[unseen]
        side = self.assign[index]
        mine = [torch.nonzero(side == k).squeeze(1) for k in (0, 1)]
        order = torch.cat(mine)
        with self.precision():
            held_in = torch.cat([self.twins[k](batch.x[mine[k]]) for k in (0, 1)]).float()
            with torch.no_grad():
                held_out = torch.cat([self.twins[1 - k](batch.x[mine[k]]) for k in (0, 1)]).float()
        loss = class_balanced_loss(held_in, self.labels[index[order]], self.num_classes)
        self.step(loss)
        self.flip(index[order], held_out.softmax(1))
        return {"loss": loss.detach(), "flip_rate": self.flip_rate()}

    @torch.no_grad()
    def flip(self, index: torch.Tensor, held_out_probs: torch.Tensor) -> None:
        """Replace stored labels by the held-out prediction with the flip probability."""
        flips = torch.bernoulli(flip_probability(held_out_probs)).bool()
        predicted = held_out_probs.argmax(1)
        self.labels[index] = torch.where(flips, predicted, self.labels[index])

    def flip_rate(self) -> torch.Tensor:
        """Fraction of training examples whose stored label differs from the original one."""
        return (self.labels != self.original).float().mean()

    def environments(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """1 where either twin's prediction differs from the original label ("cross-mistakes")."""
        wrong = self.twin_logits(x).argmax(2) != y.unsqueeze(0)
        return wrong.any(0).long()

    def discovery_stats(self) -> dict[str, float]:
        return {"flip_rate": float(self.flip_rate())}
