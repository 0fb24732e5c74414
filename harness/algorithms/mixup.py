"""Mixup (Zhang et al., ICLR 2018) and LISA, selective augmentation (Yao et al., ICML 2022).

Both train on convex combinations λ·x_i + (1 - λ)·x_j of a batch's inputs against the same
combination of their one-hot labels; they differ in how an example's partner j is chosen. Token
ids cannot be mixed, so for integer inputs (text) the featurizer's outputs are mixed instead
(SubpopBench's recipe for text).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from harness.core.errors import HarnessError
from harness.core.registry import ALGORITHMS, Hparam, log_uniform, uniform
from harness.models.algorithm import Algorithm, Batch


class Mixing(Algorithm):
    """Cross-entropy on mixed examples (``mixed_loss``)."""

    def mixed_loss(self, x: torch.Tensor, y: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """Soft-label cross-entropy of example i mixed with example partner[i] in proportion
        lam[i] : 1 - lam[i]."""

        def mix(t: torch.Tensor) -> torch.Tensor:
            share = lam.view(-1, *([1] * (t.dim() - 1))).to(t.dtype)
            return share * t + (1 - share) * t[partner]

        targets = mix(F.one_hot(y, self.num_classes).float())
        if x.is_floating_point():
            logits = self.predict(mix(x))
        else:
            with self.precision():
                logits = self.classifier(mix(self.featurizer(x))).float()
        return F.cross_entropy(logits, targets)


@ALGORITHMS.register("mixup")
class Mixup(Mixing):
    """Mixup: ERM on mixed inputs and labels, one λ ~ Beta(α, α) per batch.

    Zhang et al., ICLR 2018: each example is mixed with a random other one of the batch. No groups."""

    # SubpopBench: mixup_alpha 0.2, 10^U(-1, 1)
    hparams = {"alpha": Hparam(0.2, log_uniform(0.1, 10.0), "α of the Beta(α, α) mixing proportion", low=0, low_open=True)}

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        alpha = torch.tensor(self.hp["alpha"])
        lam = torch.distributions.Beta(alpha, alpha).sample().to(batch.x.device).expand(len(batch.y))
        partner = torch.randperm(len(batch.y), device=batch.y.device)
        loss = self.mixed_loss(batch.x, batch.y, partner, lam)
        self.step(loss)
        return {"loss": loss.detach()}


@ALGORITHMS.register("lisa")
class LISA(Mixing):
    """LISA: mixup within a label across domains (probability p_sel), else within a domain.

    Yao et al., ICML 2022: a batch mixes each example either with one of the same label and another
    domain (intra-label) or with one of the same domain and another label (intra-domain);
    λ ~ Beta(α, α) per example, as in the authors' code.

    Domains come from the run's group source: a group numbers (label, domain) as
    label · D + domain (every group source does; ``sampling`` checks it), D = groups / classes,
    so LISA needs at least two domains per class (annotated or inferred groups, not classes).
    An example with no eligible partner in the batch, or without a group, stays unmixed.
    Only input mixup (SubpopBench's default), not CutMix.
    """

    needs_groups = True
    # SubpopBench: LISA_alpha 2, 10^U(-1, 1); LISA_p_sel 0.5, U(0, 1)
    hparams = {
        "alpha": Hparam(2.0, log_uniform(0.1, 10.0), "α of the Beta(α, α) mixing proportion", low=0, low_open=True),
        "p_sel": Hparam(0.5, uniform(0.0, 1.0), "probability that a batch mixes within labels across domains",
                        low=0, high=1),
    }

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.domains = self.num_groups // self.num_classes
        if self.domains < 2 or self.num_groups % self.num_classes:
            raise HarnessError(f"lisa mixes across domains, but {self.num_groups} groups over {self.num_classes} "
                               "classes are not (class, domain) pairs with two domains or more; accepted: "
                               "groups=annotated or groups=inferred:<discovery run folder>")

    def sampling(self, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        known = g >= 0
        if not torch.equal(g[known] // self.domains, y[known]):
            raise HarnessError("lisa reads domains as group % (groups / classes), but this group source does not "
                               "number groups label * domains + domain")
        return super().sampling(y, g)

    def partners(self, y: torch.Tensor, g: torch.Tensor, intra_label: bool) -> torch.Tensor:
        """For each example, a random eligible partner in the batch (itself when none is)."""
        domain = g % self.domains
        same_label = y.unsqueeze(1) == y.unsqueeze(0)
        same_domain = domain.unsqueeze(1) == domain.unsqueeze(0)
        eligible = (same_label & ~same_domain) if intra_label else (same_domain & ~same_label)
        known = g >= 0
        eligible &= known.unsqueeze(1) & known.unsqueeze(0)
        itself = torch.eye(len(y), dtype=torch.bool, device=y.device)
        choices = torch.where(eligible.any(1, keepdim=True), eligible, itself)
        return torch.multinomial(choices.float(), 1).squeeze(1)

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        intra_label = bool(torch.rand(()) < self.hp["p_sel"])
        partner = self.partners(batch.y, batch.g, intra_label)
        alpha = torch.tensor(self.hp["alpha"])
        lam = torch.distributions.Beta(alpha, alpha).sample((len(batch.y),)).to(batch.x.device)
        loss = self.mixed_loss(batch.x, batch.y, partner, lam)
        self.step(loss)
        return {"loss": loss.detach(), "intra_label": torch.tensor(float(intra_label))}
