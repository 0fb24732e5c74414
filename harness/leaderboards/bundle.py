"""Submission bundles (format 1, docs/leaderboard-bundles.md): anyone's predictions for a board,
a folder or one .zip/.tar archive::

    manifest.json
    predictions/<dataset>/<run>/<evaluation>.npz    per run (one seed of one hparam draw) and
                                                    evaluation (worst_group, disentanglement:
                                                    ``step_<N>``; transfer: ``<depth>_<layer>``):
                                                    <split>.ids and the arrays of the protocol's
                                                    compact form (Protocol.compact_form)

``read`` checks everything before anything is written: the manifest's schema, the board, each
dataset's version against the board's published reference (a stale one is refused), every file's
sha256, each split's ids (known, each at most once; complete where a board metric reads the
split), each array as the compact form accepts it (finite numbers, shapes, classes in range); the
numbers are then recomputed by the board's protocol and selection rule (numbers the bundle claims
are ignored) and the required seeds checked. ``export`` writes our runs as bundles. No file is
unpickled; names in the bundle never steer a path outside it.
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
from harness.leaderboards import levels, shipped, whole_sweep
from harness.leaderboards import predictions as preds
from harness.protocols.compact import small_int

FORMAT_VERSION = 1
REQUIRED = ("format_version", "board", "entrant", "method", "code_version", "extra_data", "datasets", "runs", "files")
OPTIONAL = ("claimed",)
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
FILE_NAME = re.compile(r"predictions/([A-Za-z0-9_]+)/([A-Za-z0-9][A-Za-z0-9_-]{0,63})/([A-Za-z0-9][A-Za-z0-9_.-]{0,79})\.npz")
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


def _check_manifest(board: boards.Board, m: dict[str, Any]) -> dict[str, tuple[dict, dict]]:
    """The manifest checked; the board's published references of its entrant's datasets."""
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
    if not (isinstance(method, dict) and (
            (isinstance(method.get("config"), dict) and set(method) <= {"config", "spec"}
             and isinstance(method.get("spec", {}), dict))
            or (len(method) == 1 and isinstance(method.get("description"), str) and method["description"].strip()))):
        raise refuse(f"method must be {{config: <mapping>}} (with the sweep's spec: {{config, spec: <mapping>}}) or "
                     f"{{description: <text>}}, got {shown(method)}")
    version = m["code_version"]
    if not version or not (isinstance(version, (str, dict)) or (
            isinstance(version, list) and all(isinstance(v, (str, dict)) for v in version))):
        raise refuse(f"code_version must be a string, a mapping or a list of them, got {shown(version)}")
    if not isinstance(m["extra_data"], list) or not all(isinstance(v, str) for v in m["extra_data"]):
        raise refuse(f"extra_data must be a list of strings (the data used besides the board's), got "
                     f"{shown(m['extra_data'])}")
    published = shipped.references(board, entrant)
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
        if run["dataset"] not in board.datasets and not preds.form(board.scorer).evaluations_name_dataset:
            raise refuse(f"runs.{name}.dataset {shown(run['dataset'])} is not a dataset of the board; accepted: "
                         + ", ".join(board.datasets))
        if not run["dataset"] or len(run["dataset"]) > 200:
            raise refuse(f"runs.{name}.dataset must name the data the run trained on (at most 200 characters)")
    listed = m["files"]
    if not isinstance(listed, dict) or not listed:
        raise refuse(f"files must map each predictions file to its sha256, got {shown(listed)}")
    return published


def _arrays(board: boards.Board, name: str, data: bytes, ref: dict, meta: dict, splits: list[str],
            required: set[str], allowed: set[str]) -> dict[str, np.ndarray]:
    """One predictions file checked: the required arrays and only allowed ones, numeric (no
    objects, text or booleans), finite, each split's ids known and each at most once (every id
    of a split a board metric reads), each array as the protocol's compact form accepts it."""
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
    present = {k.split(".", 1)[0] for k in arrays if "." in k and not k.endswith(".ids")}
    need = required | {f"{s}.ids" for s in present}
    if set(arrays) - allowed or need - set(arrays):
        raise refuse(f"{name} must hold {', '.join(sorted(need))} (and may hold "
                     f"{', '.join(sorted(allowed - need)) or 'nothing else'}), got " + ", ".join(sorted(arrays)))
    compact = preds.form(board.scorer)
    for key, values in arrays.items():
        if values.dtype.kind not in "iuf":
            raise refuse(f"{name}: {key} must hold numbers, got {values.dtype}")
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise refuse(f"{name}: {key} must be finite numbers")
    metric_splits = {m.split(".", 1)[0] for m in board.metrics}
    for split in splits:
        if f"{split}.ids" not in arrays:
            continue
        ids, ref_ids = arrays[f"{split}.ids"], ref[f"{split}.ids"]
        if ids.ndim != 1 or ids.dtype.kind not in "iu" or len(ids) > len(ref_ids):
            raise refuse(f"{name}: {split}.ids must be a 1-D integer array of at most {len(ref_ids)} ids, got "
                         f"{ids.dtype} of shape {ids.shape}")
        try:
            at = preds.positions(ref_ids, ids.astype(np.int64))
        except HarnessError as exc:
            raise refuse(f"{name}: {split}: {exc}") from None
        if split in metric_splits and len(at) != len(ref_ids):
            raise refuse(f"{name}: {split} must cover every one of the {len(ref_ids)} {split} ids, got {len(at)}")
        arrays[f"{split}.at"] = at
    for key, values in arrays.items():
        if key.endswith((".ids", ".at")):
            continue
        split = key.split(".", 1)[0] if "." in key else None
        problem = compact.check(key, values, None if split is None else len(arrays[f"{split}.ids"]), meta)
        if problem:
            raise refuse(f"{name}: {problem}")
    problem = compact.consistent(arrays)
    if problem:
        raise refuse(f"{name}: {problem}")
    return arrays


def read(board: boards.Board, path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A checked bundle as a board entry (numbers recomputed) and its compact predictions; a
    HarnessError naming the first problem."""
    if not preds.supported(board.scorer):
        raise refuse(f"board {board.name!r} (protocol {board.scorer.name}) takes no bundles: the protocol has no "
                     "compact form (Protocol.compact_form)")
    compact = preds.form(board.scorer)
    reader = Reader(Path(path))
    manifest = _manifest(reader)
    published = _check_manifest(board, manifest)
    splits = shipped.board_splits(board)
    always, more = preds.board_columns(board.scorer, shipped.rules(board), board.metrics)
    required = set().union(*map(compact.needs, always if compact.selected_only else always | more))
    allowed = set().union(*map(compact.needs, always | more), {f"{s}.{n}" for s in splits
                                                              for n in ("ids", *compact.per_run)})
    on_disk = sorted(n for n in reader.members if n != "manifest.json")
    if sorted(manifest["files"]) != on_disk:
        extra = sorted(set(on_disk) - set(manifest["files"]))
        raise refuse(f"file(s) not in the manifest: {', '.join(map(shown, extra[:3]))}" if extra else
                     f"file(s) missing: {', '.join(map(shown, sorted(set(manifest['files']) - set(on_disk))[:3]))}")
    stored: dict[str, np.ndarray] = {}
    seen_runs = set()
    for name, digest in manifest["files"].items():
        match = FILE_NAME.fullmatch(name)
        key = compact.file_key(match.group(3), match.group(1)) if match else None
        if key is None:
            raise refuse(f"file name {shown(name)} must be predictions/<dataset>/<run>/{compact.file_pattern}.npz")
        dataset, run = match.group(1), match.group(2)
        if run not in manifest["runs"] or dataset not in board.datasets or (
                not compact.evaluations_name_dataset and manifest["runs"][run]["dataset"] != dataset):
            raise refuse(f"{name}: run {run!r} of dataset {dataset!r} is not in the manifest's runs")
        if not preds.matches(key, manifest["entrant"]):
            raise refuse(f"{name}: the evaluation is not entrant {shown(manifest['entrant'])}'s")
        data = reader.read(name)
        if not isinstance(digest, str) or hashlib.sha256(data).hexdigest() != digest:
            raise refuse(f"{name}: sha256 differs from the manifest's")
        ref, meta = published[dataset]
        arrays = _arrays(board, name, data, ref, meta, splits, required, allowed)
        seen_runs.add(run)
        scope, shared = compact.scope(key), compact.run_scope(key)
        shared = f"{shared}/" if shared else ""
        for split in splits:
            if f"{split}.at" not in arrays:
                continue
            at, n = arrays[f"{split}.at"], len(ref[f"{split}.ids"])
            pos_key = f"{run}/{shared}{split}.pos"
            if len(at) != n or not np.array_equal(at, np.arange(n)):
                pos = small_int(at, n)
                if pos_key in stored and not np.array_equal(stored[pos_key], pos):
                    raise refuse(f"{name}: {split} ids differ from another evaluation of run {run}")
                stored[pos_key] = pos
            elif pos_key in stored:
                raise refuse(f"{name}: {split} ids differ from another evaluation of run {run}")
        for array, values in arrays.items():
            if array.endswith((".ids", ".at")):
                continue
            packed, split = compact.pack(array, values, meta), array.split(".", 1)[0]
            if "." in array and array.split(".", 1)[1] in compact.per_run:
                stored[f"{run}/{shared}{array}"] = packed
            elif "." in array:
                labels = {n: ref[f"{split}.{n}"][arrays[f"{split}.at"]] for n in compact.labels}
                stored[f"{run}/{scope}/{array}"] = compact.encode(array, packed, labels)
            else:
                stored[f"{run}/{scope}/{array}"] = packed
    idle = sorted(set(manifest["runs"]) - seen_runs)
    if idle:
        raise refuse(f"run(s) {', '.join(idle)} have no predictions file")
    entry = _entry(board, manifest, stored, published, str(path))
    return entry, stored


def _entry(board: boards.Board, manifest: dict[str, Any], compact: dict[str, np.ndarray], published: dict,
           path: str) -> dict[str, Any]:
    entrant, runs = {k: manifest["entrant"][k] for k in board.entrant}, manifest["runs"]
    meta = {r: {**m, "source_num_groups": int(max((compact[k].max(initial=-1) for k in compact
                                                   if k.startswith(f"{r}/") and k.endswith(".group")),
                                                  default=-1)) + 1}
            for r, m in runs.items()}
    frame = preds.frame(board.entrant, entrant, meta, compact, published, board.scorer, board.metrics)
    results, problems = boards.numbers(board, frame, entrant)
    problems += preds.unshipped(frame, results)
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
                           "produced_by": f"harness leaderboard submit {board.name} {Path(path).name}",
                           **({"spec": manifest["method"]["spec"]} if ours and "spec" in manifest["method"] else {})},
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
    refs, compact = shipped.sweep_references(board, sweep_dir), preds.form(board.scorer)
    splits, where, written = shipped.board_splits(board), Path(sweep_dir), []
    always, more = preds.board_columns(board.scorer, shipped.rules(board), board.metrics)
    spec = whole_sweep.recorded_spec(sweep_dir)  # so that the entry accounts for its whole sweep
    spec = whole_sweep.recorded_spec(sweep_dir)  # so that the entry accounts for its whole sweep
    for entry in entries:
        folder = files.inside(Path(out), boards.entry_path(board, entry).stem, what="bundle folder")
        listed, runs, config = {}, {}, None
        for dataset, result in entry["results"].items():
            for run in result["candidates"]:
                cfg = files.read_yaml_mapping(where / run / "config.yaml", "run config")
                info = json.loads((where / run / "info.json").read_text())
                config = config or cfg
                runs[run] = {k: v for k, v in shipped.run_meta(board, cfg, info, dataset).items()
                             if k in ("dataset", "seed", "hparams_seed", "hparams")}
                chosen = shipped.selected(entry, run)
                for key, path, name in shipped.evaluations(board, where / run, cfg["dataset"]["name"]):
                    if name != dataset or not preds.matches(key, entry["entrant"]):
                        continue
                    stored = files.load_arrays(path)
                    columns = always | more if not compact.selected_only or (dataset, key["step"]) in chosen else always
                    kept = compact.shrink(stored, splits, columns, info)
                    arrays = {}
                    for split in splits:  # each split's ids, then its arrays
                        mine = {a: v for a, v in kept.items() if a.startswith(f"{split}.")}
                        arrays.update({f"{split}.ids": stored[f"{split}.ids"], **mine} if mine else {})
                    arrays.update({a: v for a, v in kept.items() if "." not in a})
                    stem = compact.file_stem(key)
                    target = files.inside(folder, "predictions", dataset, run, f"{stem}.npz",
                                          what="bundle predictions file")
                    files.save_arrays(target, **arrays)
                    listed[f"predictions/{dataset}/{run}/{stem}.npz"] = files.sha256(target)
        manifest = {"format_version": FORMAT_VERSION, "board": board.name,
                    "entrant": {k: "" if v is None else str(v) for k, v in entry["entrant"].items()},
                    "method": {"config": config, **({"spec": spec} if spec else {})},
                    "code_version": entry["provenance"]["code_version"],
                    "extra_data": [], "datasets": {
                        d: refs[preds.reference_name(board.entrant, d, entry["entrant"])][1]["version"]
                        for d in entry["results"]},
                    "runs": runs, "files": listed}
        files.write_json(folder / "manifest.json", manifest)
        written.append(folder)
    return written
