"""Pretraining methods (the ``pretraining`` protocol): supervised, SimCLR, VICReg, DirectCLR.

Each trains a backbone (and a projector, ``projector_depth`` 0: none) on two views of each
example (``views``: harness.models.pretrain), with the losses of harness.models.ssl_losses; under
torch.distributed their negatives and batch statistics are gathered across ranks with gradients.
Transfer probes (``probe`` trials) read ``probe_network()``: backbone and projector layers.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from harness.core.errors import HarnessError
from harness.core.registry import ALGORITHMS, Hparam, choice, uniform
from harness.models.pretrain import Pretrainer
from harness.models.ssl_losses import directclr_loss, distributed, info_nce, vicreg_loss


@ALGORITHMS.register("supervised_pretrain")
class SupervisedPretrain(Pretrainer):
    """Supervised pretraining: cross-entropy of a linear classifier on the projector's output of one view."""

    def build_head(self) -> None:
        self.classifier = nn.Linear(self.embed_width(), self.num_classes)

    def objective(self, h1, h2, z1, z2, batch):
        labelled = batch.y >= 0
        if not labelled.any():
            raise HarnessError("supervised_pretrain needs labels; this batch has none")
        return F.cross_entropy(self.classifier(z1[labelled]), batch.y[labelled]), {}


@ALGORITHMS.register("simclr")
class SimCLR(Pretrainer):
    """SimCLR: InfoNCE over the two views of the (global) batch, optionally with a single negative."""

    hparams = {**Pretrainer.hparams,
               "temperature": Hparam(0.2, uniform(0.1, 0.5), "InfoNCE temperature", low=0, low_open=True),
               "single_negative": Hparam(False, choice(False), "one negative per anchor (the next example's view)")}

    def objective(self, h1, h2, z1, z2, batch):
        gather, rank = distributed()
        return info_nce(z1, z2, self.hp["temperature"], self.hp["single_negative"], gather, rank), {}


@ALGORITHMS.register("vicreg")
class VICReg(Pretrainer):
    """VICReg: invariance, variance and covariance terms on the projections, weighted (25, 25, 1 by default)."""

    hparams = {**Pretrainer.hparams,
               "invariance_weight": Hparam(25.0, choice(25.0, 10.0), "weight of the invariance term", low=0),
               "variance_weight": Hparam(25.0, choice(25.0, 10.0), "weight of the variance term", low=0),
               "covariance_weight": Hparam(1.0, choice(1.0), "weight of the covariance term", low=0)}

    def objective(self, h1, h2, z1, z2, batch):
        gather, _ = distributed()
        loss, terms = vicreg_loss(z1, z2, self.hp["invariance_weight"], self.hp["variance_weight"],
                                  self.hp["covariance_weight"], gather)
        return loss, terms


@ALGORITHMS.register("directclr")
class DirectCLR(Pretrainer):
    """DirectCLR: InfoNCE on the first d0 coordinates of the backbone's output, no trainable projector."""

    uses_projector = False
    hparams = {**{k: v for k, v in Pretrainer.hparams.items() if not k.startswith("projector_")},
               "d0": Hparam(8, choice(4, 8, 16), "coordinates the loss reads", low=1),
               "temperature": Hparam(0.1, uniform(0.1, 0.5), "InfoNCE temperature", low=0, low_open=True)}

    def build_head(self) -> None:
        if self.hp["d0"] > self.featurizer.n_outputs:
            raise HarnessError(f"directclr: d0 = {self.hp['d0']} exceeds the backbone's output width "
                               f"{self.featurizer.n_outputs}")

    def objective(self, h1, h2, z1, z2, batch):
        gather, rank = distributed()
        return directclr_loss(h1, h2, self.hp["d0"], self.hp["temperature"], gather, rank), {}
