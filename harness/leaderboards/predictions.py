"""Compact predictions: what a board entry was scored from, small enough to ship with it, so that
``harness leaderboard verify`` recomputes every number on a fresh clone, with no runs present.
What of a run is kept is the protocol's compact form (``Protocol.compact_form``,
:mod:`harness.protocols.compact`); this module knows no protocol.

Two parts, both in the board folder:

- the board's **reference** per dataset (``references/<board>/<dataset>.npz`` and ``.json``): for
  each scored split the example ids and the form's labels (worst-group: labels and annotated
  groups; transfer: the task's labels; disentanglement: factor classes), the run info the form
  needs, and the dataset's version, a sha256 of those arrays. It is what a submission's
  predictions are matched against; a submission naming another version is refused (the dataset
  changed under it).
- per entry, ``entries/<board>/<entry>.npz`` (its sha256 in the entry's ``predictions`` field,
  with each candidate run's seed, hparam draw and hparams): for every candidate run and evaluation
  the arrays the form keeps, ``<run>/<scope>/<array>`` (scope: the evaluation, e.g. its step),
  the run's own arrays ``<run>/<run scope>/<split>.<name>`` (the form's ``per_run`` ones) and the
  positions of the reference's examples a run saw where it saw a part (DFR's half of validation),
  ``<split>.pos``.

The scored splits are those the board's selection rules and metrics read, and those the form
needs for them (a factor probe's training codes).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from harness.core import files
from harness.core.errors import HarnessError
from harness.protocols.base import Protocol
from harness.protocols.compact import CompactForm


def form(scorer: Protocol) -> CompactForm:
    """The protocol's compact form; a HarnessError if it has none."""
    found = scorer.compact_form()
    if found is None:
        raise HarnessError(f"protocol {scorer.name} has no compact form (Protocol.compact_form), so its boards' "
                           "entries ship no predictions and take no bundles; they verify from their runs")
    return found


def supported(scorer: Protocol) -> bool:
    return scorer.compact_form() is not None


def board_columns(scorer: Protocol, rules: list[str], metrics: list[str]) -> tuple[set[str], set[str]]:
    """The columns every evaluation needs (the rules' and the protocol's choices) and those the
    board's metrics add."""
    return {scorer.rule(r).column for r in rules} | set(scorer.choices), set(metrics)


def scored_splits(scorer: Protocol, rules: list[str], metrics: list[str]) -> list[str]:
    """The splits the board's rules and metrics read, and those the compact form needs for them,
    in the protocol's order."""
    always, more = board_columns(scorer, rules, metrics)
    wanted = {c.split(".", 1)[0] for c in always | more}
    compact = scorer.compact_form()
    if compact is not None:
        wanted |= {n.split(".", 1)[0] for c in always | more for n in compact.needs(c) if "." in n}
    return [s for s in scorer.splits if s in wanted]


def version(arrays: Mapping[str, np.ndarray], splits: list[str], labels: tuple[str, ...]) -> str:
    """A dataset's version: sha256 over its reference arrays (split by split, as int64)."""
    digest = hashlib.sha256()
    for split in splits:
        for name in ("ids", *labels):
            digest.update(f"{split}.{name}".encode())
            digest.update(np.ascontiguousarray(arrays[f"{split}.{name}"], dtype=np.int64).tobytes())
    return digest.hexdigest()


def reference_name(entrant_keys: list[str], dataset: str, entrant: Mapping[str, Any]) -> str:
    """The reference an entrant's runs are matched against: the dataset's; for a board whose
    entrant names dataset options (disentanglement's ``dataset.options.correlated``: other
    options draw other examples), the dataset's under the entrant's options,
    ``<dataset>--<value>`` (empty values left out, as entry names)."""
    parts = [dataset]
    for key in entrant_keys:
        value = entrant.get(key)
        if key.startswith("dataset.") and value not in ("", None):
            text = re.sub(r"[^A-Za-z0-9_.]+", "-", str(value)).strip("-.")
            parts.append(text if 0 < len(text) <= 40 else hashlib.md5(str(value).encode()).hexdigest()[:10])
    return "--".join(parts)


def reference_paths(board_dir: Path, board: str, name: str) -> tuple[Path, Path]:
    folder = board_dir / "references" / board
    return folder / f"{name}.npz", folder / f"{name}.json"


def load_reference(board_dir: Path, board: str, dataset: str,
                   compact: CompactForm) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """A dataset's published reference (arrays, meta), or None when the board publishes none."""
    arrays_path, meta_path = reference_paths(board_dir, board, dataset)
    if not arrays_path.is_file() or not meta_path.is_file():
        return None
    arrays, meta = files.load_arrays(arrays_path), json.loads(meta_path.read_text())
    splits = meta.get("splits", [])
    if any(f"{s}.{n}" not in arrays for s in splits for n in ("ids", *compact.labels)) or version(
            arrays, splits, compact.labels) != meta.get("version"):
        raise HarnessError(f"reference {arrays_path} does not match the version in {meta_path.name}: the board's "
                           "published dataset is damaged")
    return arrays, meta


def reference_from_run(arrays: Mapping[str, np.ndarray], info: Mapping[str, Any], splits: list[str],
                       compact: CompactForm) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A reference made from one run's stored arrays of an evaluation (every example of each split)."""
    ref = {f"{s}.{n}": np.asarray(arrays[f"{s}.{n}"], dtype=np.int64) for s in splits for n in ("ids", *compact.labels)}
    meta = {"splits": splits, **{k: info.get(k) for k in compact.info_keys},
            "version": version(ref, splits, compact.labels)}
    return ref, meta


def publish_reference(board_dir: Path, board: str, dataset: str, ref: dict[str, np.ndarray],
                      meta: dict[str, Any], compact: CompactForm) -> None:
    """Write a dataset's reference; one already published must be the same version."""
    known = load_reference(board_dir, board, dataset, compact)
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


def scopes(arrays: Mapping[str, np.ndarray], run: str) -> dict[str, dict[str, np.ndarray]]:
    """A run's compact arrays by scope: ``{scope: {name: array}}``."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, values in arrays.items():
        if key.startswith(f"{run}/"):
            scope, _, name = key[len(run) + 1:].rpartition("/")
            out.setdefault(scope, {})[name] = values
    return out


def matches(key: Mapping[str, Any], entrant: Mapping[str, Any]) -> bool:
    """Whether an evaluation (its frame columns) belongs to the entrant (transfer: its layer)."""
    return all(str(entrant[k]) == str(v) for k, v in key.items() if k in entrant)


def entrant_scopes(compact: CompactForm, by_scope: Mapping[str, Any],
                   entrant: Mapping[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """The entrant's evaluations among a run's scopes: (frame columns, scope)."""
    return [(k, s) for s in by_scope if (k := compact.key(s)) is not None and matches(k, entrant)]


def split_labels(compact: CompactForm, ref: Mapping[str, np.ndarray], shared: Mapping[str, np.ndarray],
                 split: str) -> dict[str, np.ndarray]:
    """The reference's labels of a split in a run's example order: its shipped positions
    (``<split>.pos`` among the run's ``shared`` arrays) where it saw other examples."""
    at = shared.get(f"{split}.pos")
    return {n: ref[f"{split}.{n}"] if at is None else ref[f"{split}.{n}"][at.astype(np.int64)] for n in compact.labels}


def frame(board_entrant: list[str], entrant: dict[str, Any], dataset_runs: dict[str, dict[str, Any]],
          arrays: Mapping[str, np.ndarray], references: dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]],
          scorer: Protocol, metrics: list[str]) -> pd.DataFrame:
    """The frame ``numbers`` selects from (one row per run and evaluation, the metric columns
    recomputed by the protocol), for one entrant, from compact predictions and the references.
    Column ``complete``: whether the evaluation ships what the board's ``metrics`` read."""
    compact = form(scorer)
    wanted = set().union(*(compact.needs(m) for m in metrics))
    rows = []
    for run, meta in dataset_runs.items():
        by_scope = scopes(arrays, run)
        found = entrant_scopes(compact, by_scope, entrant)
        for key, scope in sorted(found, key=lambda e: (str(e[0].get("dataset", "")), e[0]["step"], e[1])):
            dataset = key.get("dataset", meta["dataset"])
            if dataset not in references:
                continue
            ref, ref_meta = references[dataset]
            shared = by_scope.get(compact.run_scope(key), {})
            labels = {f"{split}.{n}": v for split in ref_meta["splits"]
                      for n, v in split_labels(compact, ref, shared, split).items()}
            shipped = {k: v for k, v in shared.items() if not k.endswith(".pos")}
            for name, values in by_scope[scope].items():
                split = name.split(".", 1)[0]
                shipped[name] = values if "." not in name or f"{split}.{compact.labels[0]}" not in labels else \
                    compact.decode(name, values, {n: labels[f"{split}.{n}"] for n in compact.labels})
            scored, info = compact.expand(shipped, labels, ref_meta, meta, entrant)
            scores = scorer.scores(scored, info)
            rows.append({**entrant, "run": run, "protocol": scorer.name, "dataset": dataset,
                         "hparams_seed": meta["hparams_seed"], "seed": meta["seed"],
                         **{k: v for k, v in key.items() if k != "dataset"},
                         "hparams": json.dumps(meta["hparams"], sort_keys=True), "complete": wanted <= set(shipped),
                         **{f"{s}.{n}": v for s, m in scores.items() for n, v in m.items()
                            if n in scorer.metrics or f"{s}.{n}" in scorer.choices}})
    out = pd.DataFrame(rows)
    for column in [*board_entrant, *scorer.metric_columns(), *scorer.choices]:
        if column not in out:
            out[column] = pd.Series(dtype=object if column in board_entrant else float)
    return out


def unshipped(frame: pd.DataFrame, results: dict[str, Any]) -> list[str]:
    """Chosen runs whose evaluation does not ship what the board's metrics read: a selection
    that lands on a checkpoint (or layer) the entry shipped no metric arrays of."""
    out = []
    for dataset, result in results.items():
        for run in result["runs"]:
            rows = frame[(frame["run"] == run["hash"]) & (frame["dataset"] == dataset) & (frame["step"] == run["step"])]
            if len(rows) and not rows["complete"].all():
                out.append(f"{dataset}: the selection picks run {run['hash']} at step {run['step']}, whose predictions "
                           "for the board's metrics are not shipped (an entry ships them at the evaluations its own "
                           "selection picked only)")
    return out


def per_example(compact: CompactForm, arrays: Mapping[str, np.ndarray], runs: list[dict[str, Any]],
                ref: Mapping[str, np.ndarray], metric: str, dataset: str,
                entrant: Mapping[str, Any]) -> tuple[tuple[int, ...], np.ndarray, np.ndarray | None] | None:
    """The chosen ``runs`` ({hash, seed, step}) per-example correctness on ``metric``'s split of
    ``dataset``, in the reference's order, one row per seed (sorted), and the groups the metric
    takes the worst of: what a paired bootstrap reads. None where the form cannot resample the
    metric (``CompactForm.paired``), or a run's predictions do not cover every published example."""
    split, _, name = metric.partition(".")
    if name not in compact.paired or f"{split}.y" not in ref:
        return None
    array, groups = compact.paired[name]
    y = ref[f"{split}.y"]
    rows = {}
    for run in runs:
        by_scope = scopes(arrays, run["hash"])
        found = [(k, s) for k, s in entrant_scopes(compact, by_scope, entrant)
                 if k["step"] == run["step"] and k.get("dataset", dataset) == dataset]
        if len(found) != 1 or run["seed"] in rows:
            return None
        key, scope = found[0]
        pred, shared = by_scope[scope].get(f"{split}.{array}"), by_scope.get(compact.run_scope(key), {})
        if pred is None or len(pred) != len(y):
            return None
        at = shared.get(f"{split}.pos")
        order = np.arange(len(y)) if at is None else at.astype(np.int64)
        if len(np.unique(order)) != len(y) or order.min(initial=0) < 0 or order.max(initial=0) >= len(y):
            return None
        correct = np.zeros(len(y), dtype=bool)
        correct[order] = compact.decode(f"{split}.{array}", pred, split_labels(compact, ref, shared, split)).astype(
            np.int64) == y[order]
        rows[run["seed"]] = correct
    seeds = tuple(sorted(rows))
    return seeds, np.stack([rows[s] for s in seeds]), None if groups is None else ref[f"{split}.{groups}"]
