"""Submission bundles (format 1, docs/leaderboard-bundles.md): anyone's predictions for a board,
a folder or one .zip/.tar archive::

    manifest.json
    predictions/<dataset>/<run>/step_<N>.npz    per run (one seed of one hparam draw) and evaluated
                                                checkpoint: <split>.ids, <split>.pred (predicted
                                                class), optionally <split>.group (the run's own
                                                training groups, for discovered-group entrants)

``read`` checks everything before anything is written: the manifest's schema, the board, each
dataset's version against the board's published reference (a stale one is refused), every file's
sha256, each split's ids (known, each at most once; the test split complete), integer
predictions in range; the numbers are then recomputed by the board's protocol and selection rule
(numbers the bundle claims are ignored) and the required seeds checked. ``export`` writes our
runs as bundles. No file is unpickled; names in the bundle never steer a path outside it.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from harness.core import files
from harness.core.errors import HarnessError, shown
from harness.leaderboards import board as boards
from harness.leaderboards import levels, shipped
from harness.leaderboards import predictions as preds

FORMAT_VERSION = 1
REQUIRED = ("format_version", "board", "entrant", "method", "code_version", "extra_data", "datasets", "runs", "files")
OPTIONAL = ("claimed",)
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
FILE_NAME = re.compile(r"predictions/([A-Za-z0-9_]+)/([A-Za-z0-9][A-Za-z0-9_-]{0,63})/step_(\d{1,9})\.npz")
MAX_MANIFEST = 1 << 20
MAX_FILE = 64 << 20  # bytes of one predictions file, packed or unpacked
MAX_FILES = 10_000


def refuse(message: str) -> HarnessError:
    return HarnessError(f"bundle refused: {message}")


class Reader:
    """A bundle's files by name: from a folder (regular files only, no links) or an archive
    (read in memory, never extracted)."""

    def __init__(self, path: Path):
        self.path, self.members = path, {}
        if path.is_dir():
            for item in sorted(path.rglob("*")):
                name = item.relative_to(path).as_posix()
                if item.is_symlink():
                    raise refuse(f"{name} is a link; a bundle holds plain files only")
                if item.is_file():
                    self.members[name] = item
        elif path.is_file() and tarfile.is_tarfile(path):  # before zip: a tar ending in an .npz looks like one
            self.archive = tarfile.open(path)
            for info in self.archive.getmembers():
                if info.isdir():
                    continue
                if not info.isreg() or info.size > MAX_FILE:
                    raise refuse(f"{shown(info.name)} is not a plain file of at most {MAX_FILE} bytes")
                self.members[info.name] = info
        elif path.is_file() and zipfile.is_zipfile(path):
            self.archive: Any = zipfile.ZipFile(path)
            for info in self.archive.infolist():
                if not info.is_dir():
                    if info.file_size > MAX_FILE or (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise refuse(f"{shown(info.filename)} is a link or larger than {MAX_FILE} bytes")
                    self.members[info.filename] = info
        else:
            raise refuse(f"{path} is not a folder, .zip or .tar archive")
        if len(self.members) > MAX_FILES:
            raise refuse(f"{len(self.members)} files; at most {MAX_FILES}")

    def read(self, name: str, limit: int = MAX_FILE) -> bytes:
        member = self.members.get(name)
        if member is None:
            raise refuse(f"{name} is missing" + ("" if name == "manifest.json" else " (listed in the manifest)"))
        if isinstance(member, Path):
            if member.stat().st_size > limit:
                raise refuse(f"{name} is larger than {limit} bytes")
            return member.read_bytes()
        if isinstance(member, zipfile.ZipInfo):
            if member.file_size > limit:
                raise refuse(f"{name} is larger than {limit} bytes")
            return self.archive.read(member)
        if member.size > limit:
            raise refuse(f"{name} is larger than {limit} bytes")
        return self.archive.extractfile(member).read()


def _manifest(reader: Reader) -> dict[str, Any]:
    try:
        manifest = json.loads(reader.read("manifest.json", MAX_MANIFEST).decode("utf-8"))
    except UnicodeDecodeError:
        raise refuse("manifest.json is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise refuse(f"manifest.json is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(manifest, dict):
        raise refuse(f"manifest.json must be a mapping, got {shown(manifest)}")
    missing = [k for k in REQUIRED if k not in manifest]
    unknown = sorted(k for k in manifest if k not in REQUIRED + OPTIONAL)
    if missing or unknown:
        raise refuse(f"manifest.json lacks {', '.join(missing)}" if missing else
                     f"manifest.json has unknown key(s) {', '.join(map(shown, unknown))}; accepted: "
                     + ", ".join(REQUIRED + OPTIONAL))
    return manifest


def _check_manifest(board: boards.Board, m: dict[str, Any], published: dict) -> None:
    if m["format_version"] != FORMAT_VERSION or isinstance(m["format_version"], bool):
        raise refuse(f"format_version must be {FORMAT_VERSION}, got {shown(m['format_version'])}")
    if m["board"] != board.name:
        raise refuse(f"board: the bundle is for {shown(m['board'])}, this board is {board.name!r}")
    entrant = m["entrant"]
    if not isinstance(entrant, dict) or sorted(entrant) != sorted(board.entrant) or not all(
            isinstance(v, str) and len(v) <= 200 for v in entrant.values()):
        raise refuse(f"entrant must map exactly {', '.join(board.entrant)} to strings, got {shown(entrant)}")
    if not entrant.get("algorithm", "x"):
        raise refuse("entrant.algorithm must name the method")
    board.rule_for(entrant)
    method = m["method"]
    if not (isinstance(method, dict) and len(method) == 1 and (
            isinstance(method.get("config"), dict) or (isinstance(method.get("description"), str)
                                                       and method["description"].strip()))):
        raise refuse(f"method must be {{config: <mapping>}} or {{description: <text>}}, got {shown(method)}")
    version = m["code_version"]
    if not version or not (isinstance(version, (str, dict)) or (
            isinstance(version, list) and all(isinstance(v, (str, dict)) for v in version))):
        raise refuse(f"code_version must be a string, a mapping or a list of them, got {shown(version)}")
    if not isinstance(m["extra_data"], list) or not all(isinstance(v, str) for v in m["extra_data"]):
        raise refuse(f"extra_data must be a list of strings (the data used besides the board's), got "
                     f"{shown(m['extra_data'])}")
    datasets = m["datasets"]
    if not isinstance(datasets, dict) or sorted(datasets) != sorted(board.datasets):
        raise refuse(f"datasets must map exactly {', '.join(board.datasets)} to their versions, got {shown(datasets)}")
    for dataset, version in datasets.items():
        if dataset not in published:
            raise refuse(f"board {board.name!r} publishes no reference of {dataset}")
        if version != published[dataset][1]["version"]:
            raise refuse(f"datasets.{dataset}: version {shown(version)} is stale or unknown; the board's is "
                         f"{published[dataset][1]['version']}")
    runs = m["runs"]
    if not isinstance(runs, dict) or not runs:
        raise refuse(f"runs must be a non-empty mapping of run names to {{dataset, seed, hparams_seed, hparams}}, "
                     f"got {shown(runs)}")
    for name, run in runs.items():
        if not RUN_NAME.fullmatch(name):
            raise refuse(f"run name {shown(name)} must be letters, digits, _ and - (at most 64)")
        problem = boards.shape_problem(run, {"dataset": str, "seed": int, "hparams_seed": int, "hparams": dict},
                                       f"runs.{name}")
        if problem or sorted(run) != ["dataset", "hparams", "hparams_seed", "seed"]:
            raise refuse(problem or f"runs.{name} must have exactly dataset, seed, hparams_seed, hparams")
        if run["dataset"] not in board.datasets:
            raise refuse(f"runs.{name}.dataset {shown(run['dataset'])} is not a dataset of the board; accepted: "
                         + ", ".join(board.datasets))
    listed = m["files"]
    if not isinstance(listed, dict) or not listed:
        raise refuse(f"files must map each predictions file to its sha256, got {shown(listed)}")


def _arrays(board: boards.Board, name: str, data: bytes, ref: dict, meta: dict,
            splits: list[str]) -> dict[str, np.ndarray]:
    """One predictions file checked: exactly the expected keys, integer 1-D arrays, known ids each
    at most once (every test id), predictions among the classes."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as packed:
            if sum(i.file_size for i in packed.infolist()) > MAX_FILE:
                raise refuse(f"{name} unpacks to more than {MAX_FILE} bytes")
        with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
            arrays = {k: loaded[k] for k in loaded.files}
    except HarnessError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one refusal naming it
        raise refuse(f"{name} is not a readable .npz without objects ({shown(str(exc)[:100])})") from None
    allowed = {f"{s}.{k}" for s in splits for k in ("ids", "pred", "group")}
    required = {f"{s}.{k}" for s in splits for k in ("ids", "pred")}
    if set(arrays) - allowed or required - set(arrays):
        raise refuse(f"{name} must hold {', '.join(sorted(required))} (and optionally <split>.group), got "
                     + ", ".join(sorted(arrays)))
    for key, values in arrays.items():
        if values.ndim != 1 or values.dtype.kind not in "iu":
            raise refuse(f"{name}: {key} must be a 1-D integer array, got {values.dtype} of shape {values.shape}")
    for split in splits:
        ids, pred = arrays[f"{split}.ids"], arrays[f"{split}.pred"]
        ref_ids = ref[f"{split}.ids"]
        if len(pred) != len(ids) or len(arrays.get(f"{split}.group", ids)) != len(ids) or len(ids) > len(ref_ids):
            raise refuse(f"{name}: {split} arrays must have one value per id, at most {len(ref_ids)}")
        try:
            at = preds.positions(ref_ids, ids.astype(np.int64))
        except HarnessError as exc:
            raise refuse(f"{name}: {split}: {exc}") from None
        if split == "test" and len(at) != len(ref_ids):
            raise refuse(f"{name}: test must predict every one of the {len(ref_ids)} test ids, got {len(at)}")
        if len(pred) and (pred.min() < 0 or pred.max() >= meta["num_classes"]):
            raise refuse(f"{name}: {split}.pred must be classes 0..{meta['num_classes'] - 1}")
        group = arrays.get(f"{split}.group")
        if group is not None and len(group) and (group.min() < -1 or group.max() >= 10_000):
            raise refuse(f"{name}: {split}.group must be -1 (none) or a group index below 10000")
        arrays[f"{split}.at"] = at
    return arrays


def read(board: boards.Board, path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A checked bundle as a board entry (numbers recomputed) and its compact predictions; a
    HarnessError naming the first problem."""
    if not preds.supported(board.scorer):
        raise refuse(f"board {board.name!r} (protocol {board.scorer.name}) takes no bundles; protocols with a "
                     f"compact form: {', '.join(preds.COMPACT_PROTOCOLS)}")
    reader = Reader(Path(path))
    manifest = _manifest(reader)
    published = shipped.references(board)
    _check_manifest(board, manifest, published)
    splits = shipped.board_splits(board)
    on_disk = sorted(n for n in reader.members if n != "manifest.json")
    if sorted(manifest["files"]) != on_disk:
        extra = sorted(set(on_disk) - set(manifest["files"]))
        raise refuse(f"file(s) not in the manifest: {', '.join(map(shown, extra[:3]))}" if extra else
                     f"file(s) missing: {', '.join(map(shown, sorted(set(manifest['files']) - set(on_disk))[:3]))}")
    compact: dict[str, np.ndarray] = {}
    seen_runs = set()
    for name, digest in manifest["files"].items():
        match = FILE_NAME.fullmatch(name)
        if not match:
            raise refuse(f"file name {shown(name)} must be predictions/<dataset>/<run>/step_<N>.npz")
        dataset, run, step = match.group(1), match.group(2), int(match.group(3))
        if run not in manifest["runs"] or manifest["runs"][run]["dataset"] != dataset:
            raise refuse(f"{name}: run {run!r} of dataset {dataset!r} is not in the manifest's runs")
        data = reader.read(name)
        if not isinstance(digest, str) or hashlib.sha256(data).hexdigest() != digest:
            raise refuse(f"{name}: sha256 differs from the manifest's")
        ref, meta = published[dataset]
        arrays = _arrays(board, name, data, ref, meta, splits)
        seen_runs.add(run)
        for split in splits:
            at, n = arrays[f"{split}.at"], len(ref[f"{split}.ids"])
            pos_key = f"{run}/{split}.pos"
            if len(at) != n or not np.array_equal(at, np.arange(n)):
                pos = preds.small_int(at, n)
                if pos_key in compact and not np.array_equal(compact[pos_key], pos):
                    raise refuse(f"{name}: {split} ids differ from another checkpoint of run {run}")
                compact[pos_key] = pos
            compact[f"{run}/{step}/{split}.pred"] = preds.small_int(arrays[f"{split}.pred"], meta["num_classes"])
            if f"{split}.group" in arrays:
                compact[f"{run}/{split}.group"] = preds.small_int(arrays[f"{split}.group"],
                                                                  int(arrays[f"{split}.group"].max(initial=0)))
    idle = sorted(set(manifest["runs"]) - seen_runs)
    if idle:
        raise refuse(f"run(s) {', '.join(idle)} have no predictions file")
    entry = _entry(board, manifest, compact, published, str(path))
    return entry, compact


def _entry(board: boards.Board, manifest: dict[str, Any], compact: dict[str, np.ndarray], published: dict,
           path: str) -> dict[str, Any]:
    entrant, runs = {k: manifest["entrant"][k] for k in board.entrant}, manifest["runs"]
    meta = {r: {**m, "source_num_groups": int(max((compact[k].max(initial=-1) for k in compact
                                                   if k.startswith(f"{r}/") and k.endswith(".group")),
                                                  default=-1)) + 1}
            for r, m in runs.items()}
    frame = preds.frame(board.entrant, entrant, meta, compact, published, board.scorer)
    results, problems = boards.numbers(board, frame, entrant)
    if problems:
        raise refuse("; ".join(problems))
    versions = manifest["code_version"] if isinstance(manifest["code_version"], list) else [manifest["code_version"]]
    ours = "config" in manifest["method"] and all(
        isinstance(v, dict) and str(v.get("package", "")).startswith("shift-harness") for v in versions)
    return {"board": board.name, "protocol": board.scorer.name, "entrant": entrant,
            "selection": board.rule_for(entrant).name, "results": results,
            "provenance": {"config_hashes": sorted(h for r in results.values() for h in r["candidates"]),
                           "seeds": sorted({s for r in results.values() for s in r["seeds"]}),
                           "code_version": manifest["code_version"] if not isinstance(manifest["code_version"], str)
                           else {"package": manifest["code_version"]}, "sweep": f"bundle {Path(path).name}",
                           "produced_by": f"harness leaderboard submit {board.name} {Path(path).name}"},
            "method": manifest["method"], "extra_data": manifest["extra_data"],
            "verification": levels.stamp("recomputed" if ours else "claimed"),
            "predictions": {"runs": meta}}


def enter(board: boards.Board, path: str | Path) -> Path:
    """Check a bundle and write its entry (with its compact predictions) into the board folder;
    a refusal writes nothing. An existing entry of the same entrant is not replaced."""
    entry, compact = read(board, path)
    problem = boards.shape_problem(entry, boards.ENTRY_SHAPE, "")
    if problem:
        raise refuse(f"its entry would be malformed: {problem}")
    target = boards.entry_path(board, entry)
    if target.exists():
        raise refuse(f"board {board.name!r} already has an entry {target.name}; remove it to replace it")
    npz = target.with_suffix(".npz")
    files.save_arrays(npz, **compact)
    entry["predictions"] = {"file": npz.name, "sha256": files.sha256(npz), **entry["predictions"]}
    files.write_json(target, entry)
    return target


def export(board: boards.Board, sweep_dir: str | Path, out: str | Path) -> list[Path]:
    """One bundle folder per entrant of the sweep that meets the board: ``out/<entry name>/``."""
    entries, skipped = boards.build_entries(board, sweep_dir, "export")
    if not entries:
        raise HarnessError(f"no entrant of {shown(str(sweep_dir))} meets board {board.name!r}" +
                           (": " + "; ".join(skipped) if skipped else ""))
    refs = shipped.sweep_references(board, sweep_dir)
    splits, where, written = shipped.board_splits(board), Path(sweep_dir), []
    for entry in entries:
        folder = files.inside(Path(out), boards.entry_path(board, entry).stem, what="bundle folder")
        listed, runs, config = {}, {}, None
        for dataset, result in entry["results"].items():
            for run in result["candidates"]:
                cfg = files.read_yaml_mapping(where / run / "config.yaml", "run config")
                info = json.loads((where / run / "info.json").read_text())
                config = config or cfg
                runs[run] = {"dataset": dataset, "seed": int(cfg["seed"]),
                             "hparams_seed": int(cfg["algorithm"]["hparams_seed"]), "hparams": cfg["algorithm"]["hparams"]}
                for key, path in board.scorer.evaluations(where / run):
                    stored = files.load_arrays(path)
                    arrays = {}
                    for split in splits:
                        arrays[f"{split}.ids"] = stored[f"{split}.ids"]
                        arrays[f"{split}.pred"] = preds.small_int(stored[f"{split}.probs"].argmax(1),
                                                                  int(info["num_classes"]))
                        if info.get("group_source") != "annotated" and (stored[f"{split}.group"] >= 0).any():
                            arrays[f"{split}.group"] = stored[f"{split}.group"]
                    name = f"predictions/{dataset}/{run}/step_{key['step']:07d}.npz"
                    target = files.inside(folder, "predictions", dataset, run, f"step_{key['step']:07d}.npz",
                                          what="bundle predictions file")
                    files.save_arrays(target, **arrays)
                    listed[name] = files.sha256(target)
        manifest = {"format_version": FORMAT_VERSION, "board": board.name,
                    "entrant": {k: "" if v is None else str(v) for k, v in entry["entrant"].items()},
                    "method": {"config": config}, "code_version": entry["provenance"]["code_version"],
                    "extra_data": [], "datasets": {d: refs[d][1]["version"] for d in entry["results"]},
                    "runs": runs, "files": listed}
        files.write_json(folder / "manifest.json", manifest)
        written.append(folder)
    return written
