"""Group sources: where the training and validation groups come from.

- ``annotated``: the dataset's human annotation, groups (label, attribute);
- ``classes``: the class labels alone (class balancing, worst-class selection);
- ``none``: no groups (an algorithm that needs them refuses to run).

Test metrics never use this: they always use the true annotations.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.data import ShiftDataset
from harness.errors import HarnessError

SOURCES = ("annotated", "classes", "none")


@dataclass
class GroupAssignment:
    """Group index per example of the train and val splits (-1: no group)."""

    source: str
    num_groups: int
    names: list[str]
    by_split: dict[str, torch.Tensor]


def resolve_groups(source: str, dataset: ShiftDataset) -> GroupAssignment:
    if source == "annotated":
        if not dataset.annotated:
            raise HarnessError("groups: 'annotated' needs a dataset with annotations, and this one has "
                               f"none; accepted here: {', '.join(s for s in SOURCES if s != 'annotated')}")
        return GroupAssignment(source, dataset.num_groups, dataset.group_names(),
                               {s: dataset.annotated_groups(s) for s in ("train", "val")})
    if source == "classes":
        names = list(dataset.class_names) or [str(c) for c in range(dataset.num_classes)]
        return GroupAssignment(source, dataset.num_classes, names,
                               {s: dataset.splits[s].y.clone() for s in ("train", "val")})
    if source == "none":
        return GroupAssignment(source, 0, [], {s: torch.full_like(dataset.splits[s].y, -1)
                                              for s in ("train", "val")})
    raise HarnessError(f"unknown group source {source!r}; accepted: {', '.join(SOURCES)}")
