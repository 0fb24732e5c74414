"""Entries that carry their compact predictions (harness.leaderboards.predictions): attached when
an entry is made from runs, and verified from them alone, with no runs present."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from harness.core import files
from harness.core.errors import HarnessError
from harness.leaderboards import board as boards
from harness.leaderboards import predictions as preds
from harness.leaderboards import whole_sweep
from harness.protocols.compact import small_int
from harness.reports import collect

PREDICTIONS_SHAPE = {"file": str, "sha256": str, "runs": {"*": {"dataset": str, "seed": int, "hparams_seed": int,
                                                                "hparams": dict}}}


def board_splits(board: boards.Board) -> list[str]:
    return preds.scored_splits(board.scorer, rules(board), board.metrics)


def rules(board: boards.Board) -> list[str]:
    return [board.selection] if isinstance(board.selection, str) else list(board.selection.values())


def evaluations(board: boards.Board, folder: Path, dataset: str) -> list[tuple[dict[str, Any], Path, str]]:
    """A run's evaluations (key, arrays file, board dataset) on the board's datasets; ``dataset``:
    the run's own, for evaluations that name none."""
    out = []
    for key, path in board.scorer.evaluations(folder):
        name = key.get("dataset", dataset)
        if name in board.datasets:
            out.append((key, path, name))
    return out


def sweep_references(board: boards.Board, sweep_dir: str | Path) -> dict[str, tuple[dict[str, np.ndarray], dict]]:
    """Per board dataset (and dataset options the entrant names: ``predictions.reference_name``),
    a reference made from the sweep's run of the board's protocol that saw the most examples of
    the scored splits (DFR's runs see half of validation)."""
    splits, compact = board_splits(board), preds.form(board.scorer)
    done, _ = collect.run_folders(sweep_dir)
    best: dict[str, tuple[int, Path, dict]] = {}
    for run in done:
        info = json.loads((run / "info.json").read_text())
        if info.get("protocol") != board.scorer.name:
            continue
        cfg = files.read_yaml_mapping(run / "config.yaml", "run config")
        options = {k: collect.config_value(cfg, k) for k in board.entrant if k.startswith("dataset.")}
        seen = set()
        for _, path, dataset in evaluations(board, run, cfg["dataset"]["name"]):
            name = preds.reference_name(board.entrant, dataset, options)
            if name in seen:
                continue
            seen.add(name)
            if "evaluated" in info:
                size = sum(info["evaluated"].get(s, 0) for s in splits)
            else:
                stored = files.load_arrays(path)
                size = sum(len(stored[f"{s}.ids"]) for s in splits)
            if name not in best or size > best[name][0]:
                best[name] = (size, path, info)
    out = {}
    for name, (_, path, info) in best.items():
        stored = files.load_arrays(path)
        if any(len(stored[f"{s}.ids"]) != len(np.unique(stored[f"{s}.ids"])) for s in splits):
            raise HarnessError(f"{path} repeats example ids; it cannot define the board's reference")
        out[name] = preds.reference_from_run(stored, info, splits, compact)
    return out


def publish_references(board: boards.Board, sweep_dir: str | Path) -> None:
    """Publish each board dataset's reference from the sweep, where the board has none; one
    already published must be the same version."""
    for name, (ref, meta) in sweep_references(board, sweep_dir).items():
        preds.publish_reference(board.dir, board.name, name, ref, meta, preds.form(board.scorer))


def references(board: boards.Board, entrant: dict[str, Any]) -> dict[str, tuple[dict[str, np.ndarray], dict]]:
    """The board's published references of the entrant's datasets, by dataset: in its board
    folder, else the shipped board's."""
    out, compact = {}, preds.form(board.scorer)
    for dataset in board.datasets:
        name = preds.reference_name(board.entrant, dataset, entrant)
        ref = preds.load_reference(board.dir, board.name, name, compact)
        if ref is None and board.dir != boards.BOARD_DIR:
            ref = preds.load_reference(boards.BOARD_DIR, board.name, name, compact)
        if ref is not None:
            out[dataset] = ref
    return out


def selected(entry: dict[str, Any], run: str) -> set[tuple[str, int]]:
    """The (dataset, step) evaluations of ``run`` the entry's selection picked."""
    return {(d, int(r["step"])) for d, result in entry["results"].items() for r in result["runs"] if r["hash"] == run}


def run_meta(board: boards.Board, cfg: dict[str, Any], info: dict[str, Any], dataset: str) -> dict[str, Any]:
    """What an entry records of a candidate run: its dataset (for a protocol whose evaluations
    name their own datasets, the run's: a probe run's pretraining data), seed, hparam draw,
    hparams and the torch threads and device it recorded."""
    own = preds.form(board.scorer).evaluations_name_dataset
    return {"dataset": cfg["dataset"]["name"] if own else dataset, "seed": int(cfg["seed"]),
            "hparams_seed": int(cfg["algorithm"]["hparams_seed"]), "hparams": cfg["algorithm"]["hparams"],
            "source_num_groups": int(info.get("source_num_groups") or 0),
            **({"threads": int(info["threads"])} if isinstance(info.get("threads"), int) else {}),
            **({"device": str(info["device"])} if "device" in info else {})}


def attach(board: boards.Board, entry: dict[str, Any], sweep_dir: str | Path) -> Path:
    """Write the entry's compact predictions (every candidate run and evaluation) beside it, matched
    against the board's published references, and record file, checksum and runs in the entry
    (each run's seed, hparam draw, hparams and the torch threads and device it recorded)."""
    where = Path(sweep_dir)
    arrays: dict[str, np.ndarray] = {}
    runs: dict[str, dict[str, Any]] = {}
    published = references(board, entry["entrant"])
    for dataset, result in entry["results"].items():
        if dataset not in published:
            raise HarnessError(f"board {board.name!r} publishes no reference of {dataset}; "
                               "publish_references from the sweep first")
        for run in result["candidates"]:
            if run in runs:
                continue  # a probe run is a candidate of every task; its arrays are in already
            folder = where / run
            cfg = files.read_yaml_mapping(folder / "config.yaml", "run config")
            info = json.loads((folder / "info.json").read_text())
            runs[run] = run_meta(board, cfg, info, dataset)
            arrays.update(run_arrays(board, run, folder, published, entry["entrant"], selected(entry, run)))
    path = boards.entry_path(board, entry).with_suffix(".npz")
    files.save_arrays(path, **arrays)
    entry["predictions"] = {"file": path.name, "sha256": files.sha256(path), "runs": runs}
    return path


def run_arrays(board: boards.Board, name: str, folder: Path, published: dict[str, tuple[dict, dict]],
               entrant: dict[str, Any] | None = None, chosen: set[tuple[str, int]] = frozenset()) -> dict[str, np.ndarray]:
    """One run's compact predictions, keyed ``<name>/<scope>/<array>`` (and ``<name>/<run scope>/<split>.pos``
    and the form's per-run arrays where it has them), of the evaluations of ``entrant`` (all: None)
    on the board's datasets; the board's metric arrays at every evaluation, or, for a form that
    ships them at the selected ones only, at ``chosen`` (dataset, step) ones: what ``attach``
    ships and ``rerun`` compares."""
    info = json.loads((folder / "info.json").read_text())
    compact, splits = preds.form(board.scorer), board_splits(board)
    always, more = preds.board_columns(board.scorer, rules(board), board.metrics)
    cfg = files.read_yaml_mapping(folder / "config.yaml", "run config")
    arrays: dict[str, np.ndarray] = {}
    for key, path, dataset in evaluations(board, folder, cfg["dataset"]["name"]):
        if entrant is not None and not preds.matches(key, entrant):
            continue
        if dataset not in published:
            raise HarnessError(f"board {board.name!r} publishes no reference of {dataset}")
        ref_arrays, _ = published[dataset]
        stored = files.load_arrays(path)
        columns = always | more if not compact.selected_only or (dataset, key["step"]) in chosen else always
        kept = compact.shrink(stored, splits, columns, info)
        scope, shared = compact.scope(key), compact.run_scope(key)
        shared = f"{shared}/" if shared else ""
        for split in splits:
            at = preds.positions(ref_arrays[f"{split}.ids"], stored[f"{split}.ids"])
            for label in compact.labels:
                if not np.array_equal(ref_arrays[f"{split}.{label}"][at], stored[f"{split}.{label}"]):
                    raise HarnessError(f"run {name}: {label} of {split} differ from the board's reference of {dataset}")
            if len(at) != len(ref_arrays[f"{split}.ids"]) or not np.array_equal(at, np.arange(len(at))):
                arrays[f"{name}/{shared}{split}.pos"] = small_int(at, len(ref_arrays[f"{split}.ids"]))
            labels = {label: stored[f"{split}.{label}"] for label in compact.labels}
            for array, values in kept.items():
                if array.startswith(f"{split}."):
                    if array.split(".", 1)[1] in compact.per_run:
                        arrays[f"{name}/{shared}{array}"] = values
                    else:
                        arrays[f"{name}/{scope}/{array}"] = compact.encode(array, values, labels)
        arrays.update({f"{name}/{scope}/{a}": v for a, v in kept.items() if "." not in a})
    return arrays


def has_predictions(entry: dict[str, Any]) -> bool:
    return "predictions" in entry


def verify(board: boards.Board, entry: dict[str, Any]) -> list[str]:
    """Every way the entry's numbers differ from what its shipped predictions give; empty if none."""
    problem = boards.shape_problem(entry["predictions"], PREDICTIONS_SHAPE, "predictions")
    if problem:
        return [problem]
    if (entry["board"], entry["protocol"], sorted(entry["entrant"])) != (board.name, board.scorer.name,
                                                                         sorted(board.entrant)):
        return [f"board, protocol, entrant: entry says {entry['board']!r}, {entry['protocol']!r}, "
                f"{sorted(entry['entrant'])}; the board is {board.name!r}, {board.scorer.name!r}, {board.entrant}"]
    rule = board.rule_for(entry["entrant"]).name
    if entry["selection"] != rule:
        return [f"selection: entry says {entry['selection']}, the board's rule is {rule}"]
    meta = entry["predictions"]
    path = Path(entry.get("_path") or boards.entry_path(board, entry)).parent / files.simple_name(
        meta["file"], "predictions.file")
    if not path.is_file():
        return [f"predictions: {path} not found"]
    if files.sha256(path) != meta["sha256"]:
        return [f"predictions: {path.name} altered (sha256 differs from the entry's)"]
    if not preds.supported(board.scorer):
        return [f"predictions: protocol {board.scorer.name} has no compact form (Protocol.compact_form); its "
                "entries verify from their runs"]
    arrays = files.load_arrays(path)
    published = references(board, entry["entrant"])
    missing = [d for d in board.datasets if d not in published]
    if missing:
        return [f"predictions: board {board.name!r} publishes no reference of {', '.join(missing)} in "
                f"{board.dir / 'references'}"]
    own = preds.form(board.scorer).evaluations_name_dataset
    runs = {r: m for r, m in meta["runs"].items() if own or m["dataset"] in published}
    frame = preds.frame(board.entrant, entry["entrant"], runs, arrays, published, board.scorer, board.metrics)
    recomputed, problems = boards.numbers(board, frame, entry["entrant"])
    diffs = list(problems) + preds.unshipped(frame, recomputed)
    for dataset, claimed in entry["results"].items():
        if dataset in recomputed:
            diffs += boards._compare(dataset, claimed, boards.as_recorded(board, claimed, recomputed[dataset]),
                                     board.scorer.tolerances)
    if set(entry["results"]) != set(board.datasets):
        diffs.append(f"datasets: entry has {sorted(entry['results'])}, the board requires {board.datasets}")
    hashes = sorted(h for r in recomputed.values() for h in r["candidates"])
    seeds = sorted({s for r in recomputed.values() for s in r["seeds"]})
    diffs += boards._compare("provenance.config_hashes", entry["provenance"]["config_hashes"], hashes)
    diffs += boards._compare("provenance.seeds", entry["provenance"]["seeds"], seeds)
    return diffs + whole_sweep.unaccounted(entry, None)
