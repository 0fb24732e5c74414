"""The worst-group protocol: a classifier trained on (possibly discovered) groups, scored by
worst-group accuracy after model selection on validation.

Per split and evaluation a run stores the example ids, labels, annotated groups (label ×
attribute; -1 where unannotated), the training group source's groups (-1 where it gives none)
and the class probabilities. :meth:`WorstGroup.scores` turns them into average, worst-group,
per-group, worst-class and balanced accuracy and the loss, on the annotated groups, and on the
group source's groups where those are not the annotated ones (``source_*``). A dataset whose
schema declares overlapping groups (CivilComments' identities) also has each example's 0/1
memberships stored (``memberships``) and is scored by WILDS' official worst group over them
(``overlapping_worst_group_acc``: the worst (identity, label) pair).

The protocol owns the ``groups`` config key (a group source of harness.data.groups.SOURCES) and
declares what ``inferred:<discovery method>`` waits for in a sweep: the best of the sweep's own
discoveries of that method, dataset and seed (:func:`discovery_needs`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from harness.core import files
from harness.core.errors import HarnessError
from harness.core.registry import PROTOCOLS, Need, config_section
from harness.data.dataset import ShiftDataset, Split, chunks
from harness.data.environments import best_discovery
from harness.data.groups import INFERRED, SOURCES, GroupAssignment, resolve_groups, split_source
from harness.models.algorithm import Batch, HeldOut
from harness.protocols.base import Display, Protocol, Rule
from harness.protocols.compact import CompactForm, small_int
from harness.protocols.classification import classification_metrics, overlapping_worst_group_acc

GROUP_KINDS = tuple(SOURCES)


def group_identity(source: str) -> str:
    """Inferred groups are hashed by the discovery run's folder name (its own config hash), not
    its path, so that a sweep moved or rerun elsewhere keeps its trial hashes."""
    if source.startswith(INFERRED):
        return INFERRED + Path(source[len(INFERRED):]).name
    return source


def discovery_needs(cfg: dict[str, Any]) -> list[Need]:
    """In a sweep, ``inferred:<method>`` (a name, not a folder path) waits for the sweep's
    discoveries of that method on the same dataset, and trains on the best of them."""
    source = cfg["groups"]
    method = source[len(INFERRED):] if source.startswith(INFERRED) else None
    if method is None or "/" in method:
        return []

    def chosen(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        return {**cfg, "groups": INFERRED + str(run_dir)}

    def complete(cfg: dict[str, Any], run_dirs: list[Path]) -> dict[str, Any]:
        return chosen(cfg, best_discovery(run_dirs))

    return [Need("discovery", f"{method} discovery", match={"algorithm.name": method,
                                                            "dataset.name": cfg["dataset"]["name"]},
                 complete=complete, chosen=chosen,
                 unmet=f"group source {source!r} of {cfg['algorithm']['name']} names no method of "
                       f"discovery.algorithms; accepted: {INFERRED}<path of a discovery run folder>, "
                       f"{INFERRED}<a method of discovery.algorithms>")]


@config_section("groups", default="annotated", identity=group_identity, needs=discovery_needs)
def check_groups(value: Any) -> str:
    """The group source a worst-group run trains and selects on (harness.data.groups)."""
    split_source(value)
    return value


@dataclass
class RunGroups:
    """A run's groups: the group source's (train and val; on CPU, and on the run's device for
    batches) and the annotated ones of every split (-1 where unannotated), which tests use."""

    source: GroupAssignment
    on_device: dict[str, torch.Tensor]
    annotated: dict[str, np.ndarray]


@PROTOCOLS.register("worst_group")
class WorstGroup(Protocol):
    """Classification under subpopulation shift: worst-group accuracy after selection."""

    metrics = {
        "avg_acc": Display("avg acc"),
        "worst_group_acc": Display("worst-group acc"),
        "worst_class_acc": Display("worst-class acc"),
        "balanced_acc": Display("balanced acc"),
        "adjusted_avg_acc": Display("adjusted avg acc"),
        "source_worst_group_acc": Display("worst-group acc (training groups)"),
        "overlapping_worst_group_acc": Display("worst-group acc (overlapping groups)"),
        "loss": Display("loss", percent=False, precision=3),
    }
    rules = (
        Rule("oracle", "test", "worst_group_acc", needs="test annotations (an upper bound, not a result)"),
        Rule("val-wga", "val", "worst_group_acc", needs="annotated validation groups"),
        Rule("val-wga-inferred", "val", "source_worst_group_acc", needs="discovered validation groups"),
        Rule("val-worst-class", "val", "worst_class_acc", needs="validation labels only"),
        Rule("val-avg", "val", "avg_acc", needs="validation labels only"),
    )
    reported = ("test.worst_group_acc", "test.avg_acc", "test.worst_class_acc")
    columns = ("groups",)
    progress = ("val.worst_group_acc", "test.worst_group_acc")
    selection_kinds = GROUP_KINDS
    train_eval_size = 5000  # no rule selects on train: its accuracy to about ±0.7% is enough

    def prepare(self, cfg: dict[str, Any], dataset: ShiftDataset, device: torch.device) -> RunGroups:
        source = resolve_groups(cfg["groups"], dataset)
        return RunGroups(source, {s: g.to(device) for s, g in source.by_split.items()},
                         {s: dataset.annotated_groups(s).numpy() for s in dataset.splits})

    def build(self, algorithm: type, backbone: Callable[[], nn.Module], cfg: dict[str, Any],
              dataset: ShiftDataset, state: RunGroups) -> nn.Module:
        if algorithm.needs_groups and state.source.num_groups == 0:
            raise HarnessError(f"algorithm {cfg['algorithm']['name']!r} trains on groups, but groups is 'none'; "
                               "accepted: annotated, classes or inferred:<discovery run folder>")
        return algorithm(backbone, dataset.num_classes, state.source.num_groups, cfg["algorithm"]["hparams"],
                         len(dataset.splits["train"]))

    def info(self, cfg: dict[str, Any], dataset: ShiftDataset, state: RunGroups) -> dict[str, Any]:
        source = state.source
        return {
            "num_classes": dataset.num_classes,
            "class_names": list(dataset.class_names),
            "attr_name": dataset.attr_name,
            "attr_values": list(dataset.attr_values),
            "num_groups": dataset.num_groups if dataset.annotated else 0,
            "group_names": dataset.group_names() if dataset.annotated else [],
            "group_weights": list(dataset.group_weights) if dataset.group_weights else None,
            "group_source": source.source,
            "source_num_groups": source.num_groups,
            "source_group_names": source.names,
            "source_info": source.info,
        }

    def hold_out(self, dataset: ShiftDataset, state: RunGroups, seed: int) -> HeldOut:
        """Half of each training-source group of validation (the larger half of an odd one),
        drawn by ``seed``, for the algorithm (DFR); validation, its groups and so every
        stored val prediction and selection rule keep the other half."""
        val, groups = dataset.splits["val"], state.source.by_split["val"]
        rng = np.random.default_rng(seed)
        held = np.zeros(len(val), dtype=bool)
        for g in np.unique(groups.numpy()):
            members = np.flatnonzero(groups.numpy() == g)
            held[rng.permutation(members)[:(len(members) + 1) // 2]] = True
        taken, kept = (torch.from_numpy(np.flatnonzero(m)) for m in (held, ~held))
        dataset.splits["val"], rest = self.restrict("val", val, state, kept)
        state.source, state.on_device, state.annotated = rest.source, rest.on_device, rest.annotated
        return HeldOut(val.subset(taken), groups[taken], seed)

    def sampling(self, algo: nn.Module, dataset: ShiftDataset, state: RunGroups):
        return algo.sampling(dataset.splits["train"].y, state.source.by_split["train"])

    def batch(self, split: Split, positions: torch.Tensor, state: RunGroups) -> Batch:
        return Batch(split.inputs(positions), split.y[positions], state.on_device["train"][positions], positions)

    @torch.no_grad()
    def record(self, algo: nn.Module, name: str, split: Split, state: RunGroups,
               batch_size: int) -> dict[str, np.ndarray]:
        device = split.y.device
        probs = torch.cat([torch.softmax(algo.predict(split.inputs(idx.to(device))), 1).cpu()
                           for idx in chunks(len(split), batch_size)]).numpy()
        y = split.y.cpu().numpy()
        source = state.source.by_split.get(name)
        arrays = {"ids": split.ids.cpu().numpy(), "y": y, "attr": state.annotated[name],
                  "group": source.cpu().numpy() if source is not None else np.full_like(y, -1),
                  "probs": probs.astype(np.float32)}
        if split.schema.overlapping:
            members = torch.stack([split.column(c) for c in split.schema.overlapping], 1)
            arrays["memberships"] = members.cpu().numpy().astype(np.int8)
        return arrays

    def restrict(self, name: str, split: Split, state: RunGroups, positions: torch.Tensor) -> tuple[Split, RunGroups]:
        def cut(arrays: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {s: g[positions.to(g.device)] if s == name else g for s, g in arrays.items()}

        annotated = {**state.annotated, name: state.annotated[name][positions.cpu().numpy()]}
        return split.subset(positions), RunGroups(replace(state.source, by_split=cut(state.source.by_split)),
                                                  cut(state.on_device), annotated)

    def scores(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> dict[str, dict[str, Any]]:
        out = {}
        for split in self.splits:
            if f"{split}.y" not in arrays:
                continue
            y, probs = arrays[f"{split}.y"], arrays[f"{split}.probs"]
            m = classification_metrics(y, probs, arrays[f"{split}.attr"], info["num_groups"], info["num_classes"],
                                       info.get("group_weights"))
            source = arrays[f"{split}.group"]
            if info["group_source"] != "annotated" and info["source_num_groups"] and (source >= 0).any():
                s = classification_metrics(y, probs, source, info["source_num_groups"], info["num_classes"])
                m["source_worst_group_acc"], m["source_group_acc"] = s["worst_group_acc"], s["group_acc"]
            if f"{split}.memberships" in arrays:
                m["overlapping_worst_group_acc"] = overlapping_worst_group_acc(
                    y, probs.astype(np.float64).argmax(1), arrays[f"{split}.memberships"])
            out[split] = m
        return out

    def identity(self, cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        return {"groups": group_label(cfg["groups"], run_dir.parent)}

    def compact_form(self) -> CompactForm:
        return PredictedClasses()

    def selection_kind(self, entrant: dict[str, Any]) -> str:
        groups = entrant["groups"]
        return "inferred" if groups.startswith(INFERRED) else groups


def group_label(groups: str, parent: Path) -> str:
    """A run's group source as tables show it: ``inferred:<discovery algorithm>`` for a
    discovery run folder (found at its path, or by name beside the run if the sweep moved)."""
    if not groups.startswith(INFERRED):
        return groups
    folder = Path(groups[len(INFERRED):])
    for candidate in (folder, parent / folder.name):
        if (candidate / "config.yaml").exists():
            return INFERRED + files.read_yaml_mapping(candidate / "config.yaml", "run config")["algorithm"]["name"]
    return INFERRED + folder.name


class PredictedClasses(CompactForm):
    """Worst-group's compact form: the board metrics and rules read only the predicted class, so
    each evaluation ships it per example of every scored split (the smallest integer type), the
    run's own training groups where they are not the annotated ones (what ``val-wga-inferred``
    selects on; once per run); the reference publishes labels and annotated groups. The loss is
    not a board metric and is not recomputed."""

    labels = ("y", "attr")
    info_keys = ("num_classes", "num_groups", "group_weights")
    per_run = ("group",)
    paired = {"avg_acc": ("pred", None), "worst_group_acc": ("pred", "attr"), "worst_class_acc": ("pred", "y")}

    def needs(self, column: str) -> set[str]:
        return {f"{column.split('.', 1)[0]}.pred"}

    def shrink(self, stored: dict[str, np.ndarray], splits: list[str], columns: set[str],
               info: dict[str, Any]) -> dict[str, np.ndarray]:
        out = {}
        for split in splits:
            out[f"{split}.pred"] = small_int(stored[f"{split}.probs"].argmax(1), int(info["num_classes"]))
            group = stored[f"{split}.group"]
            if info.get("group_source") != "annotated" and (group >= 0).any():
                out[f"{split}.group"] = small_int(group, int(group.max()))
        return out

    def pack(self, name: str, values: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
        top = int(meta["num_classes"]) if name.endswith(".pred") else int(values.max(initial=0))
        return small_int(values, top)

    def expand(self, shipped: dict[str, np.ndarray], ref: dict[str, np.ndarray], meta: dict[str, Any],
               run: dict[str, Any], entrant: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {}
        for split in meta["splits"]:
            if f"{split}.pred" not in shipped:
                continue
            pred = shipped[f"{split}.pred"].astype(np.int64)
            arrays[f"{split}.y"], arrays[f"{split}.attr"] = ref[f"{split}.y"], ref[f"{split}.attr"]
            arrays[f"{split}.probs"] = np.eye(int(meta["num_classes"]), dtype=np.float32)[pred]
            group = shipped.get(f"{split}.group")
            arrays[f"{split}.group"] = np.full(len(pred), -1) if group is None else group.astype(np.int64)
        info = {**{k: meta.get(k) for k in self.info_keys}, "group_source": entrant.get("groups", "annotated"),
                "source_num_groups": run.get("source_num_groups", 0)}
        return arrays, info

    def check(self, name: str, values: np.ndarray, examples: int | None, meta: dict[str, Any]) -> str | None:
        kind = name.split(".", 1)[-1]
        if values.ndim != 1 or values.dtype.kind not in "iu" or len(values) != examples:
            return f"{name} must be a 1-D integer array of one value per id ({examples}), got {values.dtype} " \
                   f"of shape {values.shape}"
        top = int(meta["num_classes"]) if kind == "pred" else 10_000
        if len(values) and (values.min() < (0 if kind == "pred" else -1) or values.max() >= top):
            return (f"{name} must be classes 0..{top - 1}" if kind == "pred"
                    else f"{name} must be -1 (none) or a group index below {top}")
        return None
