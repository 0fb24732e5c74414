"""Group distributionally robust optimisation (Sagawa et al., 2020)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.core.registry import ALGORITHMS, Hparam, log_uniform
from harness.models.algorithm import Algorithm, Batch
from harness.models.shared import group_means


@ALGORITHMS.register("group_dro")
class GroupDRO(Algorithm):
    """GroupDRO: exponentiated-gradient weights q over training groups; minimises sum_g q_g loss_g.

    Groups are the group source's (label, attribute) pairs, not DomainBed's environments. After
    each batch, q_g <- q_g * exp(eta * loss_g) for the batch's mean loss of group g (0 for a group
    absent from the batch), then q is normalised.
    """

    needs_groups = True
    hparams = {"eta": Hparam(0.01, log_uniform(1e-3, 1e-1), "step size of the group weights", low=0)}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("q", torch.full((self.num_groups,), 1.0 / self.num_groups))

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        losses = F.cross_entropy(self.predict(batch.x), batch.y, reduction="none")
        group_loss = group_means(losses, batch.g, self.num_groups)[0]
        with torch.no_grad():
            self.q *= torch.exp(self.hp["eta"] * group_loss)
            self.q /= self.q.sum()
        loss = (self.q * group_loss).sum()
        self.step(loss)
        return {"loss": loss.detach(), "avg_loss": losses.mean().detach(), "max_q": self.q.max()}
