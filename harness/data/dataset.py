"""The dataset contract: splits of inputs, labels, annotations and stable ids.

A dataset module builds a :class:`ShiftDataset` whose ``splits`` map ``train``/``val``/``test``
to :class:`Split` objects. Groups are (label, attribute) pairs, numbered
``label * num_attr_values + attribute``, as in Waterbirds (y × place) or CelebA (y × male).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split. ``x`` is a tensor held in memory (served from the device by index) or any
    map-style dataset returning one input tensor per index (read from disk)."""

    x: torch.Tensor | torch.utils.data.Dataset
    y: torch.Tensor
    ids: torch.Tensor
    attr: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = len(self.y)
        if len(self.ids) != n or (self.attr is not None and len(self.attr) != n) or len(self.x) != n:
            raise ValueError("x, y, ids and attr of a split must have the same length")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.x, torch.Tensor)

    def inputs(self, index: torch.Tensor) -> torch.Tensor:
        """The inputs at these positions (a tensor on the split's device)."""
        if self.in_memory:
            return self.x[index]
        return torch.stack([self.x[int(i)] for i in index.tolist()])

    def to(self, device: torch.device | str) -> "Split":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        x = self.x.to(device) if self.in_memory else self.x
        return Split(x, move(self.y), self.ids.to(device), move(self.attr))


@dataclass
class ShiftDataset:
    """A dataset under distribution shift: its splits, classes and annotated attribute.

    ``attr_values`` names the values of the annotated attribute (empty when the dataset carries
    no annotation); ``group_weights`` are optional per-group weights for an adjusted average
    accuracy (WILDS' Waterbirds reports accuracy weighted by training group sizes).
    """

    splits: dict[str, Split]
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: Sequence[str] = ()
    attr_name: str = "attribute"
    attr_values: Sequence[str] = ()
    default_backbone: str = "mlp"
    group_weights: Sequence[float] | None = None
    info: dict = field(default_factory=dict)

    @property
    def num_attr_values(self) -> int:
        return len(self.attr_values)

    @property
    def num_groups(self) -> int:
        return self.num_classes * max(self.num_attr_values, 1)

    @property
    def annotated(self) -> bool:
        return self.num_attr_values > 0

    def annotated_groups(self, split: str) -> torch.Tensor:
        """Group index (label, attribute) of each example of a split; -1 where unannotated."""
        s = self.splits[split]
        if s.attr is None or not self.annotated:
            return torch.full_like(s.y, -1)
        return s.y * self.num_attr_values + s.attr

    def group_names(self) -> list[str]:
        classes = list(self.class_names) or [str(c) for c in range(self.num_classes)]
        if not self.annotated:
            return classes
        return [f"{c}, {self.attr_name}={a}" for c in classes for a in self.attr_values]


def batch_indices(n: int, batch_size: int, step: int, seed: int,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """The indices of the batch at ``step``: a pure function of (n, batch size, step, seed).

    Uniform sampling walks a fresh permutation each epoch; weighted sampling draws with
    replacement. Because nothing but the step is needed, a resumed run sees the same batches
    as an uninterrupted one.
    """
    if weights is not None:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        return torch.multinomial(weights, batch_size, replacement=True, generator=gen)
    per_epoch = max(n // batch_size, 1)
    epoch, position = divmod(step, per_epoch)
    perm = _permutation(n, seed, epoch)
    start = position * batch_size
    return perm[start:start + batch_size]


_perm_cache: dict[tuple[int, int, int], torch.Tensor] = {}


def _permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    key = (n, seed, epoch)
    if key not in _perm_cache:
        _perm_cache.clear()
        _perm_cache[key] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
    return _perm_cache[key]


def positions_of(ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each wanted example id sits in ``ids``, and the wanted ids that are not there
    (stored per-example results, such as discovered environments or cached features, are
    matched to a split by id, never by position)."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64), wanted
    order = np.argsort(ids, kind="stable")
    found = order[np.minimum(np.searchsorted(ids, wanted, sorter=order), len(ids) - 1)]
    return found, wanted[ids[found] != wanted]


def chunks(n: int, size: int) -> Iterator[torch.Tensor]:
    """Consecutive index ranges of at most ``size`` covering 0..n-1 (for evaluation)."""
    for start in range(0, n, size):
        yield torch.arange(start, min(start + size, n))
