"""Matching feature distributions across environments: CORAL (Sun & Saenko, ECCV 2016
workshops, "Deep CORAL") and MMD (Li et al., CVPR 2018, "Domain generalization with adversarial
feature learning"), in DomainBed's form.

Environments are the run's training groups (``batch.g``, from the group source), not DomainBed's
domains. A group here is a label crossed with an attribute or a discovered environment, so only
groups of the same label are matched: matching groups of different labels would ask the features to
forget the label (the features collapse and every prediction is one class). The loss is the
batch's cross-entropy plus ``penalty_weight`` times the discrepancy between the featurizer's
outputs of every pair of same-label groups, averaged over pairs. Only groups with at least two
examples in the batch take part (a covariance needs two); a group's label is its examples' label.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from harness.core.registry import ALGORITHMS, Hparam, log_uniform
from harness.models.algorithm import Algorithm, Batch


class FeatureMatching(Algorithm):
    """ERM plus a penalty on the discrepancy between environments' features (``discrepancy``)."""

    needs_groups = True
    # SubpopBench (mmd_gamma, shared by MMD and CORAL): 1.0, 10^U(-1, 1)
    hparams = {"penalty_weight": Hparam(1.0, log_uniform(0.1, 10.0), "weight of the feature discrepancy", low=0)}

    def discrepancy(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self, features: torch.Tensor, g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean discrepancy over pairs of same-label groups with at least two examples each
        (0 without such a pair)."""
        envs = [(int(y[g == e][0]), features[g == e]) for e in torch.unique(g[g >= 0]) if int((g == e).sum()) >= 2]
        pairs = [self.discrepancy(a, b) for (ya, a), (yb, b) in itertools.combinations(envs, 2) if ya == yb]
        return torch.stack(pairs).mean() if pairs else features.new_zeros(())

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        with self.precision():
            features = self.featurizer(batch.x)
            logits = self.classifier(features)
        ce = F.cross_entropy(logits.float(), batch.y)
        penalty = self.penalty(features.float(), batch.g, batch.y)
        loss = ce + self.hp["penalty_weight"] * penalty
        self.step(loss)
        return {"loss": loss.detach(), "ce": ce.detach(), "penalty": penalty.detach()}


@ALGORITHMS.register("coral")
class CORAL(FeatureMatching):
    """CORAL: match feature means and covariances across environments (the run's groups).

    Discrepancy = mean squared difference of the feature means plus mean squared difference of the
    (unbiased) feature covariances (Sun & Saenko, 2016, in DomainBed's form)."""

    def discrepancy(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a.mean(0) - b.mean(0)).pow(2).mean() + (torch.cov(a.T) - torch.cov(b.T)).pow(2).mean()


@ALGORITHMS.register("mmd")
class MMD(FeatureMatching):
    """MMD: match environments' (the run's groups') features by Gaussian-kernel MMD.

    Discrepancy = squared maximum mean discrepancy (unbiased estimate) under a sum of Gaussian kernels
    exp(-γ ||u - v||²), γ in DomainBed's 10^-3 .. 10^3 (Li et al., 2018)."""

    bandwidths = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)

    def kernel(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # ||u||² + ||v||² - 2 u·v rather than cdist: its square root has no gradient at u = v
        distances = (u.pow(2).sum(1, keepdim=True) + v.pow(2).sum(1) - 2 * u @ v.T).clamp(min=0)
        return sum(torch.exp(-gamma * distances) for gamma in self.bandwidths)

    def discrepancy(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.within(a) + self.within(b) - 2 * self.kernel(a, b).mean()

    def within(self, a: torch.Tensor) -> torch.Tensor:
        """Mean kernel between distinct examples of one group: the unbiased estimate. With the
        diagonal (DomainBed's biased estimate), a group of n spread-out examples scores about
        7/n, so on small minority groups the penalty paid the features to collapse to a point."""
        k, n = self.kernel(a, a), len(a)
        return (k.sum() - k.diagonal().sum()) / (n * (n - 1))
