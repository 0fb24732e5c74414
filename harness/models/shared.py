"""Pieces that several algorithms share: means within groups (per-group risks, environments),
the class counts of the training split, and class weights from those counts.

Class statistics reach an algorithm only through the contract: ``sampling(y, g)`` sees the whole
training split's labels once, before training, and :class:`CountsClasses` records them there.
"""
from __future__ import annotations

from typing import Any

import torch

from harness.models.algorithm import Algorithm


def group_means(values: torch.Tensor, groups: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of ``values`` (n or n × ...) within each group 0..num_groups-1, and which groups
    are present. Examples of group -1 are left out; an absent group's mean is 0."""
    known = groups >= 0
    g = groups[known]
    sums = values.new_zeros((num_groups, *values.shape[1:])).index_add(0, g, values[known])
    counts = torch.bincount(g, minlength=num_groups)
    shape = (num_groups,) + (1,) * (values.dim() - 1)
    return sums / counts.clamp(min=1).to(values.dtype).view(shape), counts > 0


class CountsClasses(Algorithm):
    """An algorithm that knows how many training examples each class has (``class_counts``,
    recorded by ``sampling`` from the whole training split)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.register_buffer("class_counts", torch.zeros(self.num_classes))

    def sampling(self, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        self.class_counts.copy_(torch.bincount(y, minlength=self.num_classes))
        return super().sampling(y, g)

    def inverse_frequency(self) -> torch.Tensor:
        """N / (C' n_c) per class (0 for a class without examples; C' the classes present): the
        importance weight from the training distribution to the class-balanced one."""
        counts = self.class_counts
        return torch.where(counts > 0, counts.sum() / ((counts > 0).sum() * counts.clamp(min=1)), 0.0)


def effective_number_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Cui et al. (2019): (1 - β) / (1 - β^n_c) per class, the inverse of the effective number of
    samples, scaled to sum to the number of classes present (0 for a class without examples)."""
    n = counts.double()  # β is often 1 - 1e-5: float32 would round 1 - β^n
    weights = torch.where(n > 0, (1 - beta) / (1 - beta ** n).clamp(min=1e-300), 0.0)
    return (weights * (n > 0).sum() / weights.sum()).float()
