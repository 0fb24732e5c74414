"""Class and group balancing (Idrissi et al., 2022, "Simple data balancing achieves competitive
worst-group accuracy"): reweighting draws examples with probability inversely proportional to
their class or group size; subsampling keeps, once, as many random examples of each class or
group as the smallest one has."""
from __future__ import annotations

import torch

from harness.core.registry import ALGORITHMS
from harness.models.algorithm import Algorithm


class Balanced(Algorithm):
    """ERM on a class- or group-balanced stream of examples."""

    balance_by = "groups"  # or "classes"
    subsample = False

    def sampling(self, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        key = g if self.balance_by == "groups" else y
        positions = torch.nonzero(key >= 0).squeeze(1)
        counts = torch.bincount(key[positions])
        if not self.subsample:
            weights = torch.zeros(len(key), dtype=torch.double)
            weights[positions] = 1.0 / counts[key[positions]].double()
            return None, weights
        smallest = int(counts[counts > 0].min())
        keep = [members[torch.randperm(len(members))[:smallest]]
                for members in (positions[key[positions] == k] for k in range(len(counts)))]
        return torch.sort(torch.cat(keep)).values, None


@ALGORITHMS.register("rwg")
class ReweightGroups(Balanced):
    """RWG: draw examples with probability inversely proportional to their group's size."""

    needs_groups = True


@ALGORITHMS.register("subg")
class SubsampleGroups(Balanced):
    """SUBG: train on a random subset with every group cut to the smallest group's size."""

    needs_groups = True
    subsample = True


@ALGORITHMS.register("rwy")
class ReweightClasses(Balanced):
    """RWY: draw examples with probability inversely proportional to their class's size."""

    balance_by = "classes"


@ALGORITHMS.register("suby")
class SubsampleClasses(Balanced):
    """SUBY: train on a random subset with every class cut to the smallest class's size."""

    balance_by = "classes"
    subsample = True
