"""Group sources: where the training and validation groups come from, listed once in ``SOURCES``.

- ``annotated``: the dataset's human annotation, groups (label, attribute);
- ``inferred:<discovery run folder>``: the environments a discovery (``harness discover``) wrote
  for every train and val example id, groups (label, environment) numbered ``y * 2 + env``;
  in a sweep, ``inferred:<discovery method>`` names the best of the sweep's own discoveries;
- ``classes``: the class labels alone (class balancing, worst-class selection);
- ``none``: no groups (an algorithm that needs them refuses to run).

Test metrics never use this: they always use the true annotations. The worst-group protocol
owns the ``groups`` config key that names a source (harness.protocols.worst_group).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from harness.core.errors import HarnessError, shown, unknown
from harness.data.dataset import ShiftDataset, positions_of
from harness.data.environments import DISCOVERY_SPLITS, load_environments, read_report

INFERRED = "inferred:"  # the source written inferred:<discovery run folder>


@dataclass(frozen=True)
class GroupSource:
    """A group source: ``assign(argument, dataset)`` gives the groups; ``argument`` names what
    follows ``<name>:`` (None: the source is a plain name)."""

    assign: Callable[[str, "ShiftDataset"], "GroupAssignment"]
    help: str
    argument: str | None = None


SOURCES: dict[str, GroupSource] = {}


def group_source(name: str, help: str, argument: str | None = None) -> Callable[[Callable], Callable]:
    """Decorator: register ``assign(argument, dataset)`` as the group source ``name``."""

    def decorate(assign: Callable) -> Callable:
        SOURCES[name] = GroupSource(assign, help, argument)
        return assign

    return decorate


def accepted_sources() -> list[str]:
    """How each source is written: plain names first, then ``<name>:<argument>`` ones."""
    return ([n for n, s in SOURCES.items() if s.argument is None]
            + [f"{n}:<{s.argument}>" for n, s in SOURCES.items() if s.argument is not None])


def split_source(value: Any) -> tuple[str, str]:
    """``(name, argument)`` of a group source as written; a HarnessError naming the accepted ones."""
    if not isinstance(value, str) or not value:
        raise HarnessError(f"groups must be a group source ({', '.join(accepted_sources())}), got {shown(value)}")
    name, colon, argument = value.partition(":")
    source = SOURCES.get(name)
    if source is None or (source.argument is None) != (not colon) or (colon and not argument):
        raise unknown("group source", value, accepted_sources())
    return name, argument


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
    name, argument = split_source(source)
    return SOURCES[name].assign(argument, dataset)


@group_source("annotated", "the dataset's annotation: groups (label, attribute)")
def annotated_groups(argument: str, dataset: ShiftDataset) -> GroupAssignment:
    if not dataset.annotated:
        raise HarnessError("groups: 'annotated' needs a dataset with annotations, and this one has "
                           f"none; accepted here: {', '.join(s for s in accepted_sources() if s != 'annotated')}")
    return GroupAssignment("annotated", dataset.num_groups, dataset.group_names(),
                           {s: dataset.annotated_groups(s) for s in ("train", "val")})


@group_source("inferred", "a discovery's environments: groups (label, environment)", argument="discovery run folder")
def discovered_groups(argument: str, dataset: ShiftDataset) -> GroupAssignment:
    return inferred_groups(INFERRED + argument, Path(argument), dataset)


@group_source("classes", "the class labels alone")
def class_groups(argument: str, dataset: ShiftDataset) -> GroupAssignment:
    return GroupAssignment("classes", dataset.num_classes, list(dataset.class_names),
                           {s: dataset.splits[s].y.clone() for s in ("train", "val")})


@group_source("none", "no groups")
def no_groups(argument: str, dataset: ShiftDataset) -> GroupAssignment:
    return GroupAssignment("none", 0, [], {s: torch.full_like(dataset.splits[s].y, -1) for s in ("train", "val")})


def inferred_groups(source: str, folder: Path, dataset: ShiftDataset) -> GroupAssignment:
    """Groups (label, discovered environment), matched to the dataset's examples by id."""
    report = read_report(folder)
    if report["degenerate"]:
        classes = ", ".join(report["class_names"][c] for c in report["degenerate"])
        raise HarnessError(f"discovery {str(folder)!r} is degenerate: class(es) {classes} did not split into two "
                           "environments, so it cannot define groups; use another discovery (another "
                           "hyperparameter draw or seed; harness.data.environments.best_discovery skips degenerate ones)")
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
