"""Compact predictions: what a board entry was scored from, small enough to ship with it, so that
``harness leaderboard verify`` recomputes every number on a fresh clone, with no runs present.

Two parts, both in the board folder:

- the board's **reference** per dataset (``references/<board>/<dataset>.npz`` and ``.json``): for
  each scored split the example ids, labels and annotated groups, and the dataset's version, a
  sha256 of those arrays. It is what a submission's predictions are matched against; a
  submission naming another version is refused (the dataset changed under it).
- per entry, ``entries/<board>/<entry>.npz`` (its sha256 in the entry's ``predictions`` field,
  with each candidate run's seed, hparam draw and hparams): for every candidate run and evaluated
  checkpoint the predicted class of each example of each scored split (the smallest integer type
  that holds the classes), the run's own training groups of a split where it has them (discovered
  groups that ``val-wga-inferred`` selects on) and the positions of the reference's examples a
  run saw where it saw a part (DFR's half of validation).

The scored splits are those the board's selection rules and metrics read. Only protocols whose
board metrics and rules depend on the predicted class alone have a compact form (worst_group:
accuracies); the loss is not a board metric and is not recomputed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from harness.core import files
from harness.core.errors import HarnessError
from harness.protocols.base import Protocol

COMPACT_PROTOCOLS = ("worst_group",)
REFERENCE_ARRAYS = ("ids", "y", "attr")
# what a run's info says that scoring needs; the rest of info.json is not shipped
INFO_KEYS = ("num_classes", "num_groups", "group_weights")


def scored_splits(scorer: Protocol, rules: list[str], metrics: list[str]) -> list[str]:
    """The splits the board's rules and metrics read, in the protocol's order."""
    wanted = {scorer.rule(r).split for r in rules} | {m.split(".", 1)[0] for m in metrics}
    return [s for s in scorer.splits if s in wanted]


def supported(scorer: Protocol) -> bool:
    return scorer.name in COMPACT_PROTOCOLS


def version(arrays: Mapping[str, np.ndarray], splits: list[str]) -> str:
    """A dataset's version: sha256 over its reference arrays (split by split, as int64)."""
    digest = hashlib.sha256()
    for split in splits:
        for name in REFERENCE_ARRAYS:
            digest.update(f"{split}.{name}".encode())
            digest.update(np.ascontiguousarray(arrays[f"{split}.{name}"], dtype=np.int64).tobytes())
    return digest.hexdigest()


def reference_paths(board_dir: Path, board: str, dataset: str) -> tuple[Path, Path]:
    folder = board_dir / "references" / board
    return folder / f"{dataset}.npz", folder / f"{dataset}.json"


def load_reference(board_dir: Path, board: str, dataset: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """A dataset's published reference (arrays, meta), or None when the board publishes none."""
    arrays_path, meta_path = reference_paths(board_dir, board, dataset)
    if not arrays_path.is_file() or not meta_path.is_file():
        return None
    arrays, meta = files.load_arrays(arrays_path), json.loads(meta_path.read_text())
    splits = meta.get("splits", [])
    if any(f"{s}.{n}" not in arrays for s in splits for n in REFERENCE_ARRAYS) or version(arrays, splits) != meta.get(
            "version"):
        raise HarnessError(f"reference {arrays_path} does not match the version in {meta_path.name}: the board's "
                           "published dataset is damaged")
    return arrays, meta


def reference_from_run(arrays: Mapping[str, np.ndarray], info: Mapping[str, Any],
                       splits: list[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A reference made from one run's stored arrays of a checkpoint (every example of each split)."""
    ref = {f"{s}.{n}": np.asarray(arrays[f"{s}.{n}"], dtype=np.int64) for s in splits for n in REFERENCE_ARRAYS}
    meta = {"splits": splits, **{k: info.get(k) for k in INFO_KEYS}, "version": version(ref, splits)}
    return ref, meta


def publish_reference(board_dir: Path, board: str, dataset: str, ref: dict[str, np.ndarray],
                      meta: dict[str, Any]) -> None:
    """Write a dataset's reference; one already published must be the same version."""
    known = load_reference(board_dir, board, dataset)
    if known is not None:
        if known[1]["version"] != meta["version"]:
            raise HarnessError(f"dataset {dataset!r} of board {board!r}: these runs' examples (version "
                               f"{meta['version'][:12]}) are not the board's published ones ({known[1]['version'][:12]})")
        return
    arrays_path, meta_path = reference_paths(board_dir, board, dataset)
    files.save_arrays(arrays_path, **ref)
    files.write_json(meta_path, meta)


def positions(ref_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Where each id sits in the reference; a HarnessError for an unknown or repeated id."""
    order = np.argsort(ref_ids, kind="stable")
    found = np.searchsorted(ref_ids, ids, sorter=order)
    found = np.clip(found, 0, len(ref_ids) - 1)
    at = order[found]
    if len(ids) and not np.array_equal(ref_ids[at], ids):
        raise HarnessError(f"{int((ref_ids[at] != ids).sum())} id(s) are not examples of the board's dataset")
    if len(np.unique(at)) != len(at):
        raise HarnessError("an id occurs more than once")
    return at


def small_int(values: np.ndarray, top: int) -> np.ndarray:
    """``values`` in the smallest signed integer type holding -1..top."""
    for dtype in (np.int8, np.int16, np.int32):
        if top <= np.iinfo(dtype).max:
            return values.astype(dtype)
    return values.astype(np.int64)


def frame(board_entrant: list[str], entrant: dict[str, Any], dataset_runs: dict[str, dict[str, Any]],
          arrays: Mapping[str, np.ndarray], references: dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]],
          scorer: Protocol) -> pd.DataFrame:
    """The frame ``numbers`` selects from (one row per run and checkpoint, the metric columns
    recomputed by the protocol), for one entrant, from compact predictions and the references."""
    rows = []
    for run, meta in dataset_runs.items():
        ref, ref_meta = references[meta["dataset"]]
        steps = sorted({int(k.split("/")[1]) for k in arrays if k.startswith(f"{run}/") and k.count("/") == 2})
        info = {**{k: ref_meta.get(k) for k in INFO_KEYS}, "group_source": entrant.get("groups", "annotated"),
                "source_num_groups": meta.get("source_num_groups", 0)}
        for step in steps:
            scored = {}
            for split in ref_meta["splits"]:
                key = f"{run}/{step}/{split}.pred"
                if key not in arrays:
                    continue
                at = arrays.get(f"{run}/{split}.pos")
                at = np.arange(len(ref[f"{split}.y"])) if at is None else at.astype(np.int64)
                pred = arrays[key].astype(np.int64)
                scored[f"{split}.y"] = ref[f"{split}.y"][at]
                scored[f"{split}.attr"] = ref[f"{split}.attr"][at]
                scored[f"{split}.probs"] = np.eye(int(ref_meta["num_classes"]), dtype=np.float32)[pred]
                group = arrays.get(f"{run}/{split}.group")
                scored[f"{split}.group"] = np.full(len(at), -1) if group is None else group.astype(np.int64)
            scores = scorer.scores(scored, info)
            rows.append({**entrant, "run": run, "protocol": scorer.name, "dataset": meta["dataset"],
                         "hparams_seed": meta["hparams_seed"], "seed": meta["seed"], "step": step,
                         "hparams": json.dumps(meta["hparams"], sort_keys=True),
                         **{f"{s}.{n}": v for s, m in scores.items() for n, v in m.items() if n in scorer.metrics}})
    out = pd.DataFrame(rows)
    for column in [*board_entrant, *scorer.metric_columns()]:
        if column not in out:
            out[column] = pd.Series(dtype=float if column in scorer.metric_columns() else object)
    return out


# what each paired-bootstrap-able metric takes the worst of: a reference array, or None for the plain accuracy
PER_EXAMPLE_METRICS = {"avg_acc": None, "worst_group_acc": "attr", "worst_class_acc": "y"}


def per_example(arrays: Mapping[str, np.ndarray], runs: list[dict[str, Any]], ref: Mapping[str, np.ndarray],
                metric: str) -> tuple[tuple[int, ...], np.ndarray, np.ndarray | None] | None:
    """The chosen ``runs`` ({hash, seed, step}) per-example correctness on ``metric``'s split, in
    the reference's order, one row per seed (sorted), and the groups the metric takes the worst
    of: what a paired bootstrap reads. None where the metric is not an accuracy of the predicted
    class, or a run's predictions do not cover every published example of the split."""
    split, _, name = metric.partition(".")
    if name not in PER_EXAMPLE_METRICS or f"{split}.y" not in ref:
        return None
    y = ref[f"{split}.y"]
    rows = {}
    for run in runs:
        pred = arrays.get(f"{run['hash']}/{run['step']}/{split}.pred")
        at = arrays.get(f"{run['hash']}/{split}.pos")
        if pred is None or len(pred) != len(y) or run["seed"] in rows:
            return None
        order = np.arange(len(y)) if at is None else at.astype(np.int64)
        if len(np.unique(order)) != len(y) or order.min(initial=0) < 0 or order.max(initial=0) >= len(y):
            return None
        correct = np.zeros(len(y), dtype=bool)
        correct[order] = pred.astype(np.int64) == y[order]
        rows[run["seed"]] = correct
    seeds = tuple(sorted(rows))
    groups = PER_EXAMPLE_METRICS[name]
    return seeds, np.stack([rows[s] for s in seeds]), None if groups is None else ref[f"{split}.{groups}"]
