"""Invariance penalties over environments: IRMv1 (Arjovsky et al., 2019) and V-REx (Krueger et
al., ICML 2021).

Environments are the run's training groups (``batch.g``, from the group source: annotated
(label, attribute) pairs, inferred groups, or classes), not DomainBed's domains; examples
without a group (-1) are left out. The objective is the mean of the batch's per-environment
risks plus a penalty whose weight is 1 for the first ``anneal_steps`` steps and
``penalty_weight`` after; the optimizer restarts when the weight changes (DomainBed's habit: Adam's
moments do not survive the jump in gradient scale).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.core.registry import ALGORITHMS, Hparam, log_uniform, log_uniform_int
from harness.models.algorithm import Algorithm, Batch
from harness.models.shared import group_means


class EnvironmentPenalty(Algorithm):
    """Mean risk over the batch's environments plus an annealed penalty (``objective``)."""

    needs_groups = True

    def objective(self, logits: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean risk over the environments present, penalty)."""
        raise NotImplementedError

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        anneal = self.hp["anneal_steps"]
        if step == anneal:
            self.optimizer = self.make_optimizer(self.parameters())
        weight = self.hp["penalty_weight"] if step >= anneal else 1.0
        risk, penalty = self.objective(self.predict(batch.x), batch.y, batch.g)
        loss = risk + weight * penalty
        self.step(loss)
        return {"loss": loss.detach(), "risk": risk.detach(), "penalty": penalty.detach()}


@ALGORITHMS.register("irm")
class IRM(EnvironmentPenalty):
    """IRMv1: penalise the squared gradient of each environment's risk w.r.t. a dummy scale 1.0.

    Arjovsky et al., 2019: penalty = mean over environments of ||∇_w R_e(w · f)||² at w = 1, w a
    scalar multiplying the logits. Environments: the run's groups."""

    # SubpopBench and DomainBed: irm_lambda 1e2, 10^U(-1, 5); anneal 500, int(10^U(0, 4))
    hparams = {
        "penalty_weight": Hparam(100.0, log_uniform(0.1, 1e5), "λ: weight of the IRMv1 penalty after annealing",
                                 low=0),
        "anneal_steps": Hparam(500, log_uniform_int(1, 10_000), "steps with penalty weight 1 before λ", low=0),
    }

    def objective(self, logits: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # One dummy scale per environment: R_e depends on its own scale only, so one gradient of
        # their sum gives every environment's dR_e/dw_e.
        scale = torch.ones(self.num_groups, device=logits.device, requires_grad=True)
        losses = F.cross_entropy(logits * scale[g.clamp(min=0)].unsqueeze(1), y, reduction="none")
        risks, present = group_means(losses, g, self.num_groups)
        grads = torch.autograd.grad(risks[present].sum(), scale, create_graph=True)[0]
        return risks[present].mean(), grads[present].pow(2).mean()


@ALGORITHMS.register("vrex")
class VREx(EnvironmentPenalty):
    """V-REx: penalise the variance of the per-environment risks.

    Krueger et al., ICML 2021 (risk extrapolation). Environments: the run's groups."""

    # DomainBed: vrex_lambda 1e1, 10^U(-1, 5); anneal 500, int(10^U(0, 4))
    hparams = {
        "penalty_weight": Hparam(10.0, log_uniform(0.1, 1e5), "λ: weight of the risks' variance after annealing",
                                 low=0),
        "anneal_steps": Hparam(500, log_uniform_int(1, 10_000), "steps with penalty weight 1 before λ", low=0),
    }

    def objective(self, logits: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        risks, present = group_means(F.cross_entropy(logits, y, reduction="none"), g, self.num_groups)
        risks = risks[present]
        return risks.mean(), (risks - risks.mean()).pow(2).mean()
