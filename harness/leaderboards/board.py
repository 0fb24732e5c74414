"""Leaderboards: a board definition (YAML), one JSON entry per entrant, and the markdown table
rendered from the entries.

A definition names the protocol that scores the board, the config paths (or the protocol's
columns) that identify an entrant (worst-group: algorithm, group source and arm), the datasets,
the selection rule (one, or one per kind of entrant the protocol tells apart), the metrics and
the number of distinct seeds an entry needs. An entry is produced from a sweep folder
(``harness leaderboard submit``): the rule picks checkpoints and one hparam draw from the
entrant's runs, and the entry records the chosen runs, every candidate run (config hashes), the
seeds, the code version and the numbers. ``verify`` recomputes those numbers from the stored
predictions of the listed runs and reports every difference.

A definition may name the sweep specs its entries come from (``sweeps``), which ``harness
leaderboard reproduce`` runs. Definitions ship with the package (beside this file) or are given
as a YAML path. Entries and the table live in a board folder::

    <board folder>/entries/<name>/*.json     the entries
    <board folder>/<name>.md                 the rendered table

The shipped entries are in the package's own board folder (this one); they are read by default
and written only when a command is given that folder explicitly.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from harness.core import files
from harness.core.errors import HarnessError, shown, unknown
from harness.core.options import Option, check_options
from harness.leaderboards import levels, predictions, ties, whole_sweep
from harness.protocols.base import Protocol, Rule, protocol
from harness.protocols.selection import choose
from harness.reports import collect
from harness.reports.tables import cell, metric_label
from harness.reports.tables import render as render_table

BOARD_DIR = Path(__file__).parent
NAMES = Option(type=list, items=Option(type=str, noun="name"), non_empty=True, required=True)
# A board definition's keys; the protocol's own names (rules, kinds, metrics) are checked against it.
BOARD_OPTIONS: dict[str, Option] = {
    "name": Option(None, str, "letters, digits and underscores (default: the file's stem)", nullable=True),
    "title": Option(None, str, "(default: the name)", nullable=True),
    "protocol": Option(type=str, help="the protocol that scores the board (`harness list protocols`)", required=True),
    "entrant": NAMES,  # config paths or protocol columns
    "datasets": NAMES,
    "selection": Option(type=(Option(type=str, noun="rule"),
                              Option(type=dict, noun="mapping of entrant kinds to rules")),
                        help="a selection rule of the protocol, or one per kind of entrant", required=True),
    "metrics": NAMES,
    "required_seeds": Option(type=int, low=1, help="distinct seeds an entry needs", required=True),
    "description": Option("", str, nullable=True),
    "sweeps": Option([], list, "sweep specs the entries come from (relative to the definition's folder)",
                     items=Option(type=Path, noun="sweep spec path")),
}
NUMBER = (int, float, type(None))
STAT = {"mean": NUMBER, "stderr": NUMBER, "ci95": [NUMBER]}
# The shape of an entry: a type (or types), [shape] for a list of such, {"*": shape} for a
# mapping of any keys to such, {key: shape} for a mapping with these keys.
ENTRY_SHAPE = {
    "board": str, "protocol": str, "entrant": {"*": (str, int, float, bool, type(None))}, "selection": str,
    "results": {"*": {"hparams_seed": int, "hparams": dict, "seeds": [int], "candidates": [str],
                      "runs": [{"hash": str, "seed": int, "step": int}], "metrics": {"*": STAT}}},
    "provenance": {"config_hashes": [str], "seeds": [int], "code_version": (dict, list), "sweep": str,
                   "produced_by": str},
}
TOLERANCE = 1e-9


@dataclass
class Board:
    name: str
    title: str
    scorer: Protocol
    entrant: list[str]
    datasets: list[str]
    selection: str | dict[str, str]
    metrics: list[str]
    required_seeds: int
    description: str
    dir: Path
    # the sweep specs whose runs the board's entries come from (`harness leaderboard reproduce`);
    # paths relative to the definition's folder
    sweeps: list[Path] = field(default_factory=list)

    @property
    def entries_dir(self) -> Path:
        return self.dir / "entries" / self.name

    @property
    def table_path(self) -> Path:
        return self.dir / f"{self.name}.md"

    @property
    def config_paths(self) -> list[str]:
        """Entrant items that are config paths rather than columns every frame has."""
        return [e for e in self.entrant if e not in collect.BASE_COLUMNS + self.scorer.columns]

    def rule_for(self, entrant: dict[str, Any]) -> Rule:
        if isinstance(self.selection, str):
            return self.scorer.rule(self.selection)
        kind = self.scorer.selection_kind(entrant)
        if kind not in self.selection:
            raise HarnessError(f"board {self.name!r} has no selection rule for {kind!r} entrants ({entrant}); "
                               f"it has rules for: {', '.join(self.selection)}")
        return self.scorer.rule(self.selection[kind])


def load_board(name: str, board_dir: str | Path | None = None) -> Board:
    """The board ``name`` (a shipped definition) or the definition at a YAML path; its entries
    and table in ``board_dir`` (default: the shipped ones)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else BOARD_DIR / f"{name}.yaml"
    if not path.is_file():
        raise unknown(f"board (no {path})", name, sorted(p.stem for p in BOARD_DIR.glob("*.yaml")))
    raw = files.read_yaml_mapping(path, "board definition", f"; keys: {', '.join(BOARD_OPTIONS)}")
    raw = check_options(f"key of board {path}", raw, BOARD_OPTIONS, prefix="", suffix=f" of board {path}")
    scorer = protocol(raw["protocol"])
    selection = raw["selection"]
    for kind, rule in selection.items() if isinstance(selection, dict) else [(None, selection)]:
        if kind is not None and kind not in scorer.selection_kinds:
            raise unknown(f"kind of entrant in board {path} (protocol {scorer.name})", kind, scorer.selection_kinds)
        scorer.rule(rule)
    for metric in raw["metrics"]:
        if metric not in scorer.metric_columns():
            raise unknown(f"metric in board {path}", metric, scorer.metric_columns())
    board_name = raw["name"] or path.stem
    if not re.fullmatch(r"[A-Za-z0-9_]+", board_name):
        raise HarnessError(f"name of board {path} must be letters, digits and underscores, got {board_name!r}")
    return Board(name=board_name, title=raw["title"] or board_name, scorer=scorer, entrant=list(raw["entrant"]),
                 datasets=list(raw["datasets"]), selection=selection, metrics=list(raw["metrics"]),
                 required_seeds=raw["required_seeds"], description=raw["description"] or "",
                 dir=Path(board_dir) if board_dir is not None else BOARD_DIR,
                 sweeps=[path.parent / v for v in raw["sweeps"]])


def board_frame(board: Board, runs: list[Path]) -> pd.DataFrame:
    """The runs' frame, restricted to the board's protocol and datasets (with every entrant
    column, even when no run is left)."""
    frame = collect.load_runs(runs, board.config_paths)
    for column in board.entrant:
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    return frame[(frame["protocol"] == board.scorer.name) & frame["dataset"].isin(board.datasets)]


def entrants(board: Board, frame: pd.DataFrame) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """The frame split by entrant: (entrant values, its rows)."""
    out = []
    for values, part in frame.groupby(board.entrant, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        out.append(({k: _plain(v) for k, v in zip(board.entrant, values)}, part))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def numbers(board: Board, frame: pd.DataFrame, entrant: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Per board dataset: the selection's result for one entrant (``frame`` holds its runs only);
    and why a dataset cannot be entered, if it cannot."""
    rule = board.rule_for(entrant)
    keys = [*board.entrant, "dataset"]
    out, problems = {}, []
    for dataset in board.datasets:
        part = frame[frame["dataset"] == dataset]
        chosen = choose(part, rule, keys) if len(part) else part
        seeds = chosen["seed"].nunique() if len(chosen) else 0
        if seeds < board.required_seeds:
            problems.append(f"{dataset}: {seeds} seed(s) answer rule {rule.name}, the board requires "
                            f"{board.required_seeds}")
            continue
        agg = collect.aggregate(chosen, keys, board.metrics).iloc[0]
        out[dataset] = {
            "hparams_seed": int(agg["hparams_seed"]),
            "hparams": json.loads(chosen["hparams"].iloc[0]),
            "seeds": [int(s) for s in chosen["seed"]],
            "runs": [{"hash": row["run"], "seed": int(row["seed"]), "step": int(row["step"]),
                      **{c: _num(row.get(c)) for c in board.scorer.choices}} for _, row in chosen.iterrows()],
            "candidates": sorted(part["run"].unique().tolist()),
            "metrics": {m: {"mean": _num(agg[m]), "stderr": _num(agg[f"{m}.se"]),
                            "ci95": [_num(agg[f"{m}.ci_low"]), _num(agg[f"{m}.ci_high"])]} for m in board.metrics},
        }
    return out, problems


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def describe(entrant: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in entrant.items() if v not in ("", None))


def build_entries(board: Board, sweep_dir: str | Path, produced_by: str) -> tuple[list[dict], list[str]]:
    """Entries for every entrant of a sweep that meets the board; and a message for each that
    does not."""
    done, _ = collect.run_folders(sweep_dir)
    good, skipped = collect.vet(done, named_by_hash=True)
    frame = board_frame(board, good)
    entries = []
    for entrant, part in entrants(board, frame):
        results, problems = numbers(board, part, entrant)
        if problems:
            skipped.append(f"{describe(entrant)}: " + "; ".join(problems))
            continue
        entries.append({
            "board": board.name, "protocol": board.scorer.name, "entrant": entrant,
            "selection": board.rule_for(entrant).name, "results": results,
            "provenance": {**provenance(Path(sweep_dir), results), "sweep": str(sweep_dir), "produced_by": produced_by,
                           "spec": whole_sweep.recorded_spec(sweep_dir)},
            "verification": levels.stamp("recomputed"),
        })
    return entries, skipped


def provenance(where: Path, results: dict[str, Any]) -> dict[str, Any]:
    """What an entry's runs themselves say about it: their config hashes, the seeds its numbers
    average and the code version the runs recorded when they were trained."""
    hashes = sorted(h for r in results.values() for h in r["candidates"])
    return {"config_hashes": hashes, "seeds": sorted({s for r in results.values() for s in r["seeds"]}),
            "code_version": collect.runs_code_version(where / h for h in hashes)}


def entry_path(board: Board, entry: dict) -> Path:
    """``entries/<board>/<entrant values>.json``: each value reduced to letters, digits, ``_``,
    ``.`` and ``-`` (so no value can point outside the folder), empty ones left out, and a
    value that would be long replaced by a short hash of itself."""
    parts = []
    for value in entry["entrant"].values():
        if value in ("", None):
            continue
        text = re.sub(r"[^A-Za-z0-9_.]+", "-", str(value)).strip("-.")
        parts.append(text if 0 < len(text) <= 40 else hashlib.md5(str(value).encode()).hexdigest()[:10])
    return files.inside(board.entries_dir, f"{'--'.join(parts) or 'entry'}.json", what="entry file")


def write_entries(board: Board, entries: list[dict]) -> list[Path]:
    paths = [entry_path(board, e) for e in entries]
    if len(set(paths)) != len(paths):
        raise HarnessError(f"two entrants of board {board.name!r} would share one entry file; entrants: "
                           + "; ".join(describe(e["entrant"]) for e in entries))
    for path, entry in zip(paths, entries):
        files.write_json(path, entry)
    return paths


def load_entries(board: Board) -> list[dict]:
    entries = []
    for path in sorted(board.entries_dir.glob("*.json")):
        entry = files.read_json(path, "leaderboard entry")
        problem = shape_problem(entry, ENTRY_SHAPE, "")
        if problem:
            raise HarnessError(f"leaderboard entry {path}: {problem}")
        entry["_path"] = str(path)
        entries.append(entry)
    return entries


def shape_problem(value: Any, shape: Any, where: str) -> str | None:
    """What in ``value`` does not have ``shape`` (see ENTRY_SHAPE), or None."""
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where or 'entry'} must be a list, got {shown(value)}"
        return next((p for i, v in enumerate(value) if (p := shape_problem(v, shape[0], f"{where}[{i}]"))), None)
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where or 'entry'} must be a mapping, got {shown(value)}"
        if "*" in shape:
            return next((p for k, v in value.items() if (p := shape_problem(v, shape["*"], f"{where}.{k}".lstrip(".")))),
                        None)
        missing = [k for k in shape if k not in value]
        if missing:
            return f"{where or 'entry'} lacks {', '.join(missing)}"
        return next((p for k, s in shape.items() if (p := shape_problem(value[k], s, f"{where}.{k}".lstrip(".")))),
                    None)
    if not isinstance(value, shape) or (isinstance(value, bool) and shape in (int, NUMBER)):
        return f"{where} must be {_type_names(shape)}, got {shown(value)}"
    return None


def _type_names(shape: type | tuple) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping",
             list: "a list", type(None): "null"}
    return " or ".join(dict.fromkeys(names[t] for t in (shape if isinstance(shape, tuple) else (shape,))))


def verify(board: Board, entry: dict, runs_dir: str | Path | None = None) -> list[str]:
    """Every way the entry differs from what its listed runs' predictions give; empty if none."""
    where = Path(runs_dir or entry["provenance"]["sweep"])
    diffs = []
    if entry["board"] != board.name:
        diffs.append(f"board: entry says {entry['board']!r}, this board is {board.name!r}")
    if entry["protocol"] != board.scorer.name:
        diffs.append(f"protocol: entry says {entry['protocol']!r}, the board's is {board.scorer.name!r}")
    if sorted(entry["entrant"]) != sorted(board.entrant):
        return diffs + [f"entrant: entry names {sorted(entry['entrant'])}, the board identifies entrants by "
                        f"{board.entrant}"]
    rule = board.rule_for(entry["entrant"]).name
    if entry["selection"] != rule:
        diffs.append(f"selection: entry says {entry['selection']}, the board's rule is {rule}")
    if set(entry["results"]) != set(board.datasets):
        diffs.append(f"datasets: entry has {sorted(entry['results'])}, the board requires {board.datasets}")
    hashes = sorted({h for r in entry["results"].values() for h in r["candidates"]})
    missing = [h for h in hashes if not (where / h / "done").exists()]
    if missing:
        return diffs + [f"runs not found (finished) in {where}: {', '.join(missing)}; pass --runs with the sweep "
                        "folder that holds them (rerunning the sweep recreates them: same configs, same hashes)"]
    diffs += whole_sweep.unaccounted(entry, where)
    good, left_out = collect.vet([where / h for h in hashes], named_by_hash=True)
    diffs += left_out
    frame = board_frame(board, good)
    # a run may hold rows of several entrants (a transfer run: one per layer); each listed run
    # must hold rows of this one, and only those are scored
    parts = dict((json.dumps(e, sort_keys=True), part) for e, part in entrants(board, frame))
    mine = parts.get(json.dumps(entry["entrant"], sort_keys=True), frame.iloc[0:0])
    foreign = sorted(set(frame["run"]) - set(mine["run"]))
    if foreign:
        diffs.append(f"runs {', '.join(foreign)} are not entrant {describe(entry['entrant'])}")
    recomputed, problems = numbers(board, mine, entry["entrant"])
    diffs += problems
    for dataset, claimed in entry["results"].items():
        if dataset in recomputed:
            diffs += _compare(f"{dataset}", claimed, as_recorded(board, claimed, recomputed[dataset]),
                              board.scorer.tolerances)
    if not left_out and not problems:
        claimed = entry["provenance"]
        for key, actual in provenance(where, recomputed).items():
            diffs += _compare(f"provenance.{key}", claimed.get(key) if isinstance(claimed, dict) else None, actual)
    return diffs


def as_recorded(board: Board, claimed: dict[str, Any], recomputed: dict[str, Any]) -> dict[str, Any]:
    """``recomputed`` without the protocol's choices that the entry's runs do not record (an
    entry made before they were recorded: read as not recorded, not as a difference)."""
    runs = claimed.get("runs")
    if not isinstance(runs, list) or len(runs) != len(recomputed["runs"]):
        return recomputed
    kept = [{k: v for k, v in mine.items()
             if k not in board.scorer.choices or (isinstance(theirs, dict) and k in theirs)}
            for theirs, mine in zip(runs, recomputed["runs"])]
    return {**recomputed, "runs": kept}


def _compare(where: str, claimed: Any, actual: Any, tolerances: Mapping[str, float] | None = None) -> list[str]:
    """Every difference between a claimed and a recomputed value: numbers agree to ``TOLERANCE``,
    or under ``metrics`` to the protocol's tolerance for that metric (``Protocol.tolerances``)."""
    if isinstance(claimed, dict) and isinstance(actual, dict):
        keys = sorted(set(claimed) | set(actual))
        return [d for k in keys for d in _compare(f"{where}.{k}", claimed.get(k), actual.get(k), tolerances)]
    if isinstance(claimed, list) and isinstance(actual, list) and len(claimed) == len(actual):
        return [d for i, (a, b) in enumerate(zip(claimed, actual))
                for d in _compare(f"{where}[{i}]", a, b, tolerances)]
    if isinstance(claimed, (int, float)) and isinstance(actual, (int, float)) and not isinstance(claimed, bool):
        _, under_metrics, column = where.partition(".metrics.")
        metric = column.split(".")[1] if under_metrics and "." in column else ""
        if math.isclose(claimed, actual, rel_tol=0, abs_tol=max(TOLERANCE, (tolerances or {}).get(metric, 0.0))):
            return []
    elif claimed == actual:
        return []
    return [f"{where}: entry says {claimed!r}, recomputed {actual!r}"]


def render(board: Board, entries: list[dict]) -> str:
    """The board's markdown table, best first by its first metric on its first dataset. Entrant
    columns empty in every entry (e.g. ``arm`` when no arm has its own overrides) are left out."""
    first = board.metrics[0]

    def score(entry: dict) -> float:
        value = entry["results"].get(board.datasets[0], {}).get("metrics", {}).get(first, {}).get("mean")
        return -math.inf if value is None else value

    shown = [k for k in board.entrant if any(e["entrant"].get(k) not in ("", None) for e in entries)]
    headers = ["rank", *shown, "selection"]
    for dataset in board.datasets:
        headers += [f"{dataset}: {metric_label(board.scorer, m)}" for m in board.metrics]
        headers += [f"{dataset}: {label}" for label in board.scorer.choices.values()]
    headers += ["seeds", "verified", "code"]
    rows = []
    ordered = sorted(entries, key=score, reverse=True)
    labels, method = ranking(board, ordered)
    for rank, entry in zip(labels, ordered):
        row = [rank, *(entry["entrant"].get(k, "") for k in shown), entry["selection"]]
        for dataset in board.datasets:
            result = entry["results"].get(dataset)
            for m in board.metrics:
                display = board.scorer.metrics[m.split(".", 1)[1]]
                row.append(cell(_flat(result["metrics"][m], m), m, display) if result else "-")
            row += [chosen_values(result, c) for c in board.scorer.choices]
        row += [" ".join(map(str, entry["provenance"]["seeds"])), levels.label(entry),
                version_text(entry["provenance"]["code_version"])]
        rows.append(row)
    if isinstance(board.selection, str):
        rules = board.selection
    else:
        rules = ", ".join(f"{rule} ({kind})" for kind, rule in board.selection.items())
    percent = any(board.scorer.metrics[m.split(".", 1)[1]].percent for m in board.metrics)
    head = (f"# {board.title}\n\n{board.description.strip()}\n\n" if board.description else f"# {board.title}\n\n")
    return (head + f"Protocol: {board.scorer.name}. Selection: {rules}; one hparam draw per entry (best mean over "
            f"seeds). Cells: mean ± standard error over {board.required_seeds}+ seeds [95% bootstrap interval]"
            + (", accuracies in %" if percent else "") + ". Every number is recomputed from the listed runs' stored "
            f"predictions by `harness leaderboard verify {board.name}`; entries are in `entries/{board.name}/`. "
            f"Rank: {method} ({first} on {board.datasets[0]}). Verified: {VERIFIED_TEXT}.\n\n"
            + render_table(headers, rows, "markdown") + "\n")


VERIFIED_TEXT = ("recomputed (every number from stored predictions by the protocol and selection rule), re-run "
                 "(besides, the runs trained again gave the same numbers) or claimed (predictions of code that is "
                 "not ours: recomputed, the training not checked), with the date")


def chosen_values(result: dict[str, Any] | None, choice: str) -> str:
    """A choice of each of a result's runs (``0.1 1``), in their order; ``not recorded`` for an
    entry made before it was recorded."""
    if not result:
        return "-"
    if any(choice not in run for run in result["runs"]):
        return "not recorded"
    return " ".join("-" if run[choice] is None else f"{run[choice]:g}" for run in result["runs"])


def ranking(board: Board, ordered: list[dict]) -> tuple[list[str], str]:
    """Rank labels of entries sorted best first, tie groups by the board's first metric on its
    first dataset (harness.leaderboards.ties): a paired bootstrap between entries that ship
    per-example predictions, Welch's test for a pair without (those entries marked †); and the
    method in words, for the rendering."""
    first, dataset = board.metrics[0], board.datasets[0]
    scores = []
    for entry in ordered:
        result = entry["results"].get(dataset)
        stat = result["metrics"].get(first, {}) if result else {}
        scores.append(ties.Score(stat.get("mean"), stat.get("stderr"), len(result["seeds"]) if result else 0))
    examples = [_examples(board, entry, dataset, first) for entry in ordered]
    paired = [i for i, x in enumerate(examples) if x is not None and scores[i].mean is not None]
    draws = dict(zip(paired, ties.paired_draws([examples[i] for i in paired])))

    def differs(i: int, j: int) -> bool:
        if i in draws and j in draws:
            return ties.paired_differ(draws[i], draws[j])
        return ties.differ(scores[i], scores[j])

    labels = ties.ranges(len(ordered), differs)
    if not draws:
        return labels, ties.METHOD
    if len(draws) == len(ordered):
        return labels, ties.PAIRED_METHOD
    return [f"{label}{'' if i in draws else ' †'}" for i, label in enumerate(labels)], ties.PAIRED_METHOD + ties.FALLBACK


def _examples(board: Board, entry: dict, dataset: str, metric: str) -> ties.Examples | None:
    """An entry's per-example correctness for the paired bootstrap, from its compact predictions
    (checked against their checksum) and the board's published examples; None without them."""
    meta, result = entry.get("predictions"), entry["results"].get(dataset)
    if not isinstance(meta, dict) or not result or not isinstance(meta.get("file"), str) or "_path" not in entry:
        return None
    path = Path(entry["_path"]).parent / meta["file"]
    if path.name != meta["file"] or not path.is_file() or files.sha256(path) != meta.get("sha256"):
        return None
    compact = board.scorer.compact_form()
    if compact is None:
        return None
    name = predictions.reference_name(board.entrant, dataset, entry["entrant"])
    reference = (predictions.load_reference(board.dir, board.name, name, compact)
                 or predictions.load_reference(BOARD_DIR, board.name, name, compact))
    if reference is None:
        return None
    found = predictions.per_example(compact, files.load_arrays(path), result["runs"], reference[0], metric, dataset,
                                    entry["entrant"])
    return None if found is None else ties.Examples(*found)


def version_text(version: Any) -> str:
    """``shift-harness 0.1 @ 1234abcd (dirty)``; several versions: each; none recorded: ``-``."""
    if isinstance(version, list):
        return "; ".join(map(version_text, version))
    if not isinstance(version, dict):
        return "-"
    commit = (version.get("git_commit") or "")[:10]
    return f"{version.get('package')}" + (f" @ {commit}" if commit else "") + (" (dirty)" if version.get("git_dirty") else "")


def _flat(stat: dict[str, Any], metric: str) -> dict[str, float]:
    nan = float("nan")
    low, high = stat.get("ci95") or [None, None]
    value = lambda v: nan if v is None else v  # noqa: E731
    return {metric: value(stat.get("mean")), f"{metric}.se": value(stat.get("stderr")),
            f"{metric}.ci_low": value(low), f"{metric}.ci_high": value(high)}
