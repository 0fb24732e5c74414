"""Group sources: where the training and validation groups come from.

- ``annotated``: the dataset's human annotation, groups (label, attribute);
- ``inferred:<discovery run folder>``: the environments a discovery (``harness discover``) wrote
  for every train and val example id, groups (label, environment) numbered ``y * 2 + env``;
- ``classes``: the class labels alone (class balancing, worst-class selection);
- ``none``: no groups (an algorithm that needs them refuses to run).

Test metrics never use this: they always use the true annotations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.core.config import INFERRED
from harness.core.errors import HarnessError
from harness.data.dataset import ShiftDataset, positions_of
from harness.data.environments import DISCOVERY_SPLITS, load_environments, read_report

SOURCES = ("annotated", "classes", "none", f"{INFERRED}<discovery run folder>")


@dataclass
class GroupAssignment:
    """Group index per example of the train and val splits (-1: no group). ``info`` says where
    inferred groups came from (recorded in the run's info.json)."""

    source: str
    num_groups: int
    names: list[str]
    by_split: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)


def resolve_groups(source: str, dataset: ShiftDataset) -> GroupAssignment:
    if source == "annotated":
        if not dataset.annotated:
            raise HarnessError("groups: 'annotated' needs a dataset with annotations, and this one has "
                               f"none; accepted here: {', '.join(s for s in SOURCES if s != 'annotated')}")
        return GroupAssignment(source, dataset.num_groups, dataset.group_names(),
                               {s: dataset.annotated_groups(s) for s in ("train", "val")})
    if source == "classes":
        return GroupAssignment(source, dataset.num_classes, list(dataset.class_names),
                               {s: dataset.splits[s].y.clone() for s in ("train", "val")})
    if source == "none":
        return GroupAssignment(source, 0, [], {s: torch.full_like(dataset.splits[s].y, -1)
                                              for s in ("train", "val")})
    if source.startswith(INFERRED) and source[len(INFERRED):]:
        return inferred_groups(source, Path(source[len(INFERRED):]), dataset)
    raise HarnessError(f"unknown group source {source!r}; accepted: {', '.join(SOURCES)}")


def inferred_groups(source: str, folder: Path, dataset: ShiftDataset) -> GroupAssignment:
    """Groups (label, discovered environment), matched to the dataset's examples by id."""
    report = read_report(folder)
    if report["degenerate"]:
        classes = ", ".join(report["class_names"][c] for c in report["degenerate"])
        raise HarnessError(f"discovery {str(folder)!r} is degenerate: class(es) {classes} did not split into two "
                           "environments, so it cannot define groups; use another discovery (another "
                           "hyperparameter draw or seed; harness.runs.discovery.best_discovery skips degenerate ones)")
    envs = load_environments(folder, with_labels=True)
    by_split = {}
    for split in DISCOVERY_SPLITS:
        ids, y, env = envs[split]
        wanted = dataset.splits[split].ids.numpy()
        found, missing = positions_of(ids, wanted)
        if len(missing):
            raise HarnessError(f"{len(missing)} {split} example id(s) of this dataset (first: {int(missing[0])}) are not "
                               f"in discovery {str(folder)!r}; it was made on other data: run `harness discover` "
                               "with this run's dataset and dataset.options, and use that folder")
        labels = dataset.splits[split].y.numpy()
        if not np.array_equal(y[found], labels):
            raise HarnessError(f"discovery {str(folder)!r} has other labels for the {split} examples than this "
                               "dataset: it was made with other dataset.options; rerun `harness discover` with "
                               "this run's dataset options")
        by_split[split] = torch.from_numpy(labels * 2 + env[found])
    names = [f"{c}, env={e}" for c in dataset.class_names for e in (0, 1)]
    info = {"discovery_run": str(folder), "discovery_hash": report["hash"],
            "discovery_algorithm": report["algorithm"]}
    return GroupAssignment(source, dataset.num_classes * 2, names, by_split, info)
