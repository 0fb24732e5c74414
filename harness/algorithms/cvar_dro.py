"""CVaR distributionally robust optimisation (Levy et al., NeurIPS 2020, "Large-scale methods
for distributionally robust optimization")."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.core.registry import ALGORITHMS, Hparam, log_uniform
from harness.models.algorithm import Algorithm, Batch


def cvar(losses: torch.Tensor, alpha: float) -> torch.Tensor:
    """The conditional value at risk at level α of the batch's losses: the mean of the worst α
    fraction. With k = α·n, the k largest losses get weight 1/k each; when k is fractional the
    next one gets the remaining (k - floor(k))/k, and below k = 1 the largest loss gets it all."""
    worst = losses.sort(descending=True).values
    k = max(alpha * len(losses), 1.0)
    rank = torch.arange(len(losses), device=losses.device, dtype=losses.dtype)
    return ((k - rank).clamp(0, 1) * worst).sum() / k


@ALGORITHMS.register("cvar_dro")
class CVaRDRO(Algorithm):
    """CVaR-DRO: minimise the mean of the worst α fraction of each batch's per-example losses.

    No groups: the uncertainty set is every reweighting of the batch with weights at most 1/(αn)
    (Levy et al., NeurIPS 2020).
    """

    # SubpopBench (Yang et al., 2023): joint_dro_alpha 0.1, 10^U(-2, 0)
    hparams = {"alpha": Hparam(0.1, log_uniform(0.01, 1.0), "fraction of the batch's largest losses minimised",
                                 low=0, low_open=True, high=1)}

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        losses = F.cross_entropy(self.predict(batch.x), batch.y, reduction="none")
        loss = cvar(losses, self.hp["alpha"])
        self.step(loss)
        return {"loss": loss.detach(), "avg_loss": losses.mean().detach()}
