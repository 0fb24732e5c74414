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
from harness.reports import collect

PREDICTIONS_SHAPE = {"file": str, "sha256": str, "runs": {"*": {"dataset": str, "seed": int, "hparams_seed": int,
                                                                "hparams": dict}}}


def board_splits(board: boards.Board) -> list[str]:
    rules = [board.selection] if isinstance(board.selection, str) else list(board.selection.values())
    return preds.scored_splits(board.scorer, rules, board.metrics)


def sweep_references(board: boards.Board, sweep_dir: str | Path) -> dict[str, tuple[dict[str, np.ndarray], dict]]:
    """Per board dataset, a reference made from the sweep's run of the board's protocol that saw
    the most examples of the scored splits (DFR's runs see half of validation)."""
    splits = board_splits(board)
    done, _ = collect.run_folders(sweep_dir)
    best: dict[str, tuple[int, Path, dict]] = {}
    for run in done:
        info = json.loads((run / "info.json").read_text())
        cfg = files.read_yaml_mapping(run / "config.yaml", "run config")
        dataset = cfg["dataset"]["name"]
        evaluations = board.scorer.evaluations(run) if info.get("protocol") == board.scorer.name else []
        if dataset in board.datasets and evaluations:
            size = sum(info.get("evaluated", {}).get(s, 0) for s in splits)
            if dataset not in best or size > best[dataset][0]:
                best[dataset] = (size, evaluations[0][1], info)
    out = {}
    for dataset, (_, path, info) in best.items():
        stored = files.load_arrays(path)
        if any(len(stored[f"{s}.ids"]) != len(np.unique(stored[f"{s}.ids"])) for s in splits):
            raise HarnessError(f"{path} repeats example ids; it cannot define the board's reference")
        out[dataset] = preds.reference_from_run(stored, info, splits)
    return out


def publish_references(board: boards.Board, sweep_dir: str | Path) -> None:
    """Publish each board dataset's reference from the sweep, where the board has none; one
    already published must be the same version."""
    for dataset, (ref, meta) in sweep_references(board, sweep_dir).items():
        preds.publish_reference(board.dir, board.name, dataset, ref, meta)


def references(board: boards.Board) -> dict[str, tuple[dict[str, np.ndarray], dict]]:
    """The board's published references: in its board folder, else the shipped board's."""
    out = {}
    for dataset in board.datasets:
        ref = preds.load_reference(board.dir, board.name, dataset)
        if ref is None and board.dir != boards.BOARD_DIR:
            ref = preds.load_reference(boards.BOARD_DIR, board.name, dataset)
        if ref is not None:
            out[dataset] = ref
    return out


def attach(board: boards.Board, entry: dict[str, Any], sweep_dir: str | Path) -> Path:
    """Write the entry's compact predictions (every candidate run and checkpoint) beside it, matched
    against the board's published references, and record file, checksum and runs in the entry
    (each run's seed, hparam draw, hparams and the torch threads and device it recorded)."""
    where = Path(sweep_dir)
    arrays: dict[str, np.ndarray] = {}
    runs: dict[str, dict[str, Any]] = {}
    for dataset, result in entry["results"].items():
        ref = references(board).get(dataset)
        if ref is None:
            raise HarnessError(f"board {board.name!r} publishes no reference of {dataset}; "
                               "publish_references from the sweep first")
        for run in result["candidates"]:
            folder = where / run
            cfg = files.read_yaml_mapping(folder / "config.yaml", "run config")
            info = json.loads((folder / "info.json").read_text())
            runs[run] = {"dataset": dataset, "seed": int(cfg["seed"]), "hparams_seed": int(cfg["algorithm"]["hparams_seed"]),
                         "hparams": cfg["algorithm"]["hparams"], "source_num_groups": int(info.get("source_num_groups") or 0),
                         **({"threads": int(info["threads"])} if isinstance(info.get("threads"), int) else {}),
                         **({"device": str(info["device"])} if "device" in info else {})}
            arrays.update(run_arrays(board, run, folder, ref))
    path = boards.entry_path(board, entry).with_suffix(".npz")
    files.save_arrays(path, **arrays)
    entry["predictions"] = {"file": path.name, "sha256": files.sha256(path), "runs": runs}
    return path


def run_arrays(board: boards.Board, name: str, folder: Path,
               ref: tuple[dict[str, np.ndarray], dict[str, Any]]) -> dict[str, np.ndarray]:
    """One run's compact predictions, keyed ``<name>/<step>/<split>.pred`` (and ``<name>/<split>.pos``,
    ``<name>/<split>.group`` where it has them): what ``attach`` ships and ``rerun`` compares."""
    info = json.loads((folder / "info.json").read_text())
    ref_arrays, ref_meta = ref
    arrays: dict[str, np.ndarray] = {}
    for key, path in board.scorer.evaluations(folder):
        stored = files.load_arrays(path)
        for split in board_splits(board):
            at = preds.positions(ref_arrays[f"{split}.ids"], stored[f"{split}.ids"])
            if not np.array_equal(ref_arrays[f"{split}.y"][at], stored[f"{split}.y"]):
                raise HarnessError(f"run {name}: labels of {split} differ from the board's reference")
            if len(at) != len(ref_arrays[f"{split}.ids"]) or not np.array_equal(at, np.arange(len(at))):
                arrays[f"{name}/{split}.pos"] = preds.small_int(at, len(ref_arrays[f"{split}.ids"]))
            top = int(ref_meta["num_classes"])
            arrays[f"{name}/{key['step']}/{split}.pred"] = preds.small_int(stored[f"{split}.probs"].argmax(1), top)
            group = stored[f"{split}.group"]
            if info.get("group_source") != "annotated" and (group >= 0).any():
                arrays[f"{name}/{split}.group"] = preds.small_int(group, int(group.max()))
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
        return [f"predictions: protocol {board.scorer.name} has no compact form; accepted: "
                + ", ".join(preds.COMPACT_PROTOCOLS)]
    arrays = files.load_arrays(path)
    published = references(board)
    missing = [d for d in board.datasets if d not in published]
    if missing:
        return [f"predictions: board {board.name!r} publishes no reference of {', '.join(missing)} in "
                f"{board.dir / 'references'}"]
    runs = {r: m for r, m in meta["runs"].items() if m["dataset"] in published}
    frame = preds.frame(board.entrant, entry["entrant"], runs, arrays, published, board.scorer)
    recomputed, problems = boards.numbers(board, frame, entry["entrant"])
    diffs = list(problems)
    for dataset, claimed in entry["results"].items():
        if dataset in recomputed:
            diffs += boards._compare(dataset, claimed, recomputed[dataset])
    if set(entry["results"]) != set(board.datasets):
        diffs.append(f"datasets: entry has {sorted(entry['results'])}, the board requires {board.datasets}")
    hashes = sorted(h for r in recomputed.values() for h in r["candidates"])
    seeds = sorted({s for r in recomputed.values() for s in r["seeds"]})
    diffs += boards._compare("provenance.config_hashes", entry["provenance"]["config_hashes"], hashes)
    diffs += boards._compare("provenance.seeds", entry["provenance"]["seeds"], seeds)
    return diffs + whole_sweep.unaccounted(entry, None)
