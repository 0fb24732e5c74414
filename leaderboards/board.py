"""Leaderboards: a board definition (YAML), one JSON entry per (algorithm, group source), and
the markdown table rendered from the entries.

An entry is produced from a sweep folder (``harness leaderboard submit``): the board's selection
rule for the entry's group source picks checkpoints and one hparam draw from the sweep's runs,
and the entry records the chosen runs, every candidate run (config hashes), the seeds, the code
version and the numbers. ``verify`` recomputes those numbers from the stored predictions of the
listed runs and reports every difference.

Layout of a board folder (by default the one holding this file)::

    <name>.yaml                 the definition
    entries/<name>/*.json       the entries
    <name>.md                   the rendered table
"""
from __future__ import annotations

import importlib.metadata
import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from harness.core import files
from harness.core.config import INFERRED
from harness.core.errors import HarnessError, unknown
from harness.protocols.selection import RULES, choose
from harness.reports import collect
from harness.reports.tables import cell, metric_label
from harness.reports.tables import render as render_table

BOARD_DIR = Path(__file__).parent
BOARD_KEYS = ("name", "title", "datasets", "selection", "metrics", "required_seeds", "description")
GROUP_KINDS = ("annotated", "inferred", "classes", "none")
TOLERANCE = 1e-9


@dataclass
class Board:
    name: str
    title: str
    datasets: list[str]
    selection: dict[str, str]
    metrics: list[str]
    required_seeds: int
    description: str
    dir: Path

    @property
    def entries_dir(self) -> Path:
        return self.dir / "entries" / self.name

    @property
    def table_path(self) -> Path:
        return self.dir / f"{self.name}.md"

    def rule_for(self, groups: str) -> str:
        kind = "inferred" if groups.startswith(INFERRED) else groups
        if kind not in self.selection:
            raise HarnessError(f"board {self.name!r} has no selection rule for group source {groups!r}; "
                               f"it has rules for: {', '.join(self.selection)}")
        return self.selection[kind]


def load_board(name: str, board_dir: str | Path = BOARD_DIR) -> Board:
    path = Path(board_dir) / f"{name}.yaml"
    if not path.exists():
        found = sorted(p.stem for p in Path(board_dir).glob("*.yaml"))
        raise unknown(f"board (no {path})", name, found)
    raw = yaml.safe_load(path.read_text()) or {}
    for key in raw:
        if key not in BOARD_KEYS:
            raise unknown(f"key of board {path}", key, BOARD_KEYS)
    selection = raw.get("selection")
    if isinstance(selection, str):
        selection = {kind: selection for kind in GROUP_KINDS}
    if not isinstance(selection, dict):
        raise HarnessError(f"board {path}: selection must be a rule or a mapping group source → rule "
                           f"(group sources: {', '.join(GROUP_KINDS)})")
    for kind, rule in selection.items():
        if kind not in GROUP_KINDS:
            raise unknown(f"group source in board {path}", kind, GROUP_KINDS)
        if rule not in RULES:
            raise unknown(f"selection rule in board {path}", rule, list(RULES))
    accepted = [f"{s}.{m}" for s in collect.SPLITS for m in collect.METRICS]
    for metric in raw.get("metrics") or []:
        if metric not in accepted:
            raise unknown(f"metric in board {path}", metric, accepted)
    if not raw.get("datasets") or not raw.get("metrics") or not isinstance(raw.get("required_seeds"), int):
        raise HarnessError(f"board {path} needs datasets (a list), metrics (a list) and required_seeds (an integer)")
    return Board(name=raw.get("name", name), title=raw.get("title", name), datasets=list(raw["datasets"]),
                 selection=selection, metrics=list(raw["metrics"]), required_seeds=raw["required_seeds"],
                 description=raw.get("description", ""), dir=Path(board_dir))


def code_version() -> dict[str, Any]:
    """The installed package's version and, when it runs from a git checkout, the commit and
    whether the checkout had uncommitted changes."""
    version: dict[str, Any] = {"package": f"shift-harness {importlib.metadata.version('shift-harness')}",
                               "git_commit": None, "git_dirty": None}
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30)
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return version
    if commit.returncode == 0:
        version.update(git_commit=commit.stdout.strip(), git_dirty=bool(dirty.stdout.strip()))
    return version


def numbers(board: Board, frame: pd.DataFrame, groups: str) -> tuple[dict[str, Any], list[str]]:
    """Per board dataset: the selection's result for one (algorithm, group source) of ``frame``
    (its runs only); and why a dataset cannot be entered, if it cannot."""
    rule = board.rule_for(groups)
    out, problems = {}, []
    for dataset in board.datasets:
        part = frame[frame["dataset"] == dataset]
        chosen = choose(part, rule) if len(part) else part
        if len(chosen) < board.required_seeds:
            problems.append(f"{dataset}: {len(chosen)} seed(s) answer rule {rule}, the board requires "
                            f"{board.required_seeds}")
            continue
        agg = collect.aggregate(chosen, board.metrics).iloc[0]
        out[dataset] = {
            "hparams_seed": int(agg["hparams_seed"]),
            "hparams": json.loads(chosen["hparams"].iloc[0]),
            "seeds": [int(s) for s in chosen["seed"]],
            "runs": [{"hash": r, "seed": int(s), "step": int(t)}
                     for r, s, t in zip(chosen["run"], chosen["seed"], chosen["step"])],
            "candidates": sorted(part["run"].unique().tolist()),
            "metrics": {m: {"mean": _num(agg[m]), "stderr": _num(agg[f"{m}.se"]),
                            "ci95": [_num(agg[f"{m}.ci_low"]), _num(agg[f"{m}.ci_high"])]} for m in board.metrics},
        }
    return out, problems


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def build_entries(board: Board, sweep_dir: str | Path, produced_by: str) -> tuple[list[dict], list[str]]:
    """Entries for every (algorithm, group source) of a sweep that meets the board; and a
    message for each that does not."""
    done, _ = collect.run_folders(sweep_dir)
    frame = collect.load_runs(done)
    frame = frame[frame["dataset"].isin(board.datasets)]
    version = code_version()
    entries, skipped = [], []
    for (algorithm, groups), part in frame.groupby(["algorithm", "groups"], sort=True):
        results, problems = numbers(board, part, groups)
        if problems:
            skipped.append(f"{algorithm} ({groups}): " + "; ".join(problems))
            continue
        entries.append({
            "board": board.name, "algorithm": algorithm, "groups": groups, "selection": board.rule_for(groups),
            "results": results,
            "provenance": {
                "config_hashes": sorted(h for r in results.values() for h in r["candidates"]),
                "seeds": sorted({s for r in results.values() for s in r["seeds"]}),
                "code_version": version, "sweep": str(sweep_dir), "produced_by": produced_by,
            },
        })
    return entries, skipped


def entry_path(board: Board, entry: dict) -> Path:
    return board.entries_dir / f"{entry['algorithm']}--{entry['groups'].replace(':', '-')}.json"


def write_entries(board: Board, entries: list[dict]) -> list[Path]:
    paths = []
    for entry in entries:
        path = entry_path(board, entry)
        files.write_json(path, entry)
        paths.append(path)
    return paths


def load_entries(board: Board) -> list[dict]:
    entries = []
    for path in sorted(board.entries_dir.glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise HarnessError(f"leaderboard entry {path} is not valid JSON: {exc}") from None
        missing = [k for k in ("board", "algorithm", "groups", "selection", "results", "provenance") if k not in entry]
        if missing:
            raise HarnessError(f"leaderboard entry {path} lacks {', '.join(missing)}")
        entry["_path"] = str(path)
        entries.append(entry)
    return entries


def verify(board: Board, entry: dict, runs_dir: str | Path | None = None) -> list[str]:
    """Every way the entry differs from what its listed runs' predictions give; empty if none."""
    where = Path(runs_dir or entry["provenance"]["sweep"])
    diffs = []
    if entry["board"] != board.name:
        diffs.append(f"board: entry says {entry['board']!r}, this board is {board.name!r}")
    if entry["selection"] != board.rule_for(entry["groups"]):
        diffs.append(f"selection: entry says {entry['selection']}, the board's rule is {board.rule_for(entry['groups'])}")
    if set(entry["results"]) != set(board.datasets):
        diffs.append(f"datasets: entry has {sorted(entry['results'])}, the board requires {board.datasets}")
    hashes = sorted({h for r in entry["results"].values() for h in r["candidates"]})
    missing = [h for h in hashes if not (where / h / "done").exists()]
    if missing:
        return diffs + [f"runs not found (finished) in {where}: {', '.join(missing)}; pass --runs with the sweep "
                        "folder that holds them (rerunning the sweep recreates them: same configs, same hashes)"]
    frame = collect.load_runs(where / h for h in hashes)
    for run, algorithm, groups in frame[["run", "algorithm", "groups"]].drop_duplicates().itertuples(index=False):
        if (algorithm, groups) != (entry["algorithm"], entry["groups"]):
            diffs.append(f"run {run} is {algorithm} with groups {groups}, not {entry['algorithm']} with {entry['groups']}")
    recomputed, problems = numbers(board, frame, entry["groups"])
    diffs += problems
    for dataset, claimed in entry["results"].items():
        if dataset in recomputed:
            diffs += _compare(f"{dataset}", claimed, recomputed[dataset])
    return diffs


def _compare(where: str, claimed: Any, actual: Any) -> list[str]:
    if isinstance(claimed, dict) and isinstance(actual, dict):
        keys = sorted(set(claimed) | set(actual))
        return [d for k in keys for d in _compare(f"{where}.{k}", claimed.get(k), actual.get(k))]
    if isinstance(claimed, list) and isinstance(actual, list) and len(claimed) == len(actual):
        return [d for i, (a, b) in enumerate(zip(claimed, actual)) for d in _compare(f"{where}[{i}]", a, b)]
    if isinstance(claimed, (int, float)) and isinstance(actual, (int, float)) and not isinstance(claimed, bool):
        if math.isclose(claimed, actual, rel_tol=0, abs_tol=TOLERANCE):
            return []
    elif claimed == actual:
        return []
    return [f"{where}: entry says {claimed!r}, recomputed {actual!r}"]


def render(board: Board, entries: list[dict]) -> str:
    """The board's markdown table, best first by its first metric on its first dataset."""
    first = board.metrics[0]

    def score(entry: dict) -> float:
        value = entry["results"].get(board.datasets[0], {}).get("metrics", {}).get(first, {}).get("mean")
        return -math.inf if value is None else value

    headers = ["rank", "algorithm", "groups", "selection"]
    for dataset in board.datasets:
        headers += [f"{dataset}: {metric_label(m)}" for m in board.metrics]
    headers += ["seeds", "code"]
    rows = []
    for rank, entry in enumerate(sorted(entries, key=score, reverse=True), 1):
        row = [rank, entry["algorithm"], entry["groups"], entry["selection"]]
        for dataset in board.datasets:
            result = entry["results"].get(dataset)
            for m in board.metrics:
                row.append(cell(_flat(result["metrics"][m], m), m) if result else "-")
        version = entry["provenance"]["code_version"]
        commit = (version.get("git_commit") or "")[:10]
        row += [" ".join(map(str, entry["provenance"]["seeds"])),
                f"{version['package']}" + (f" @ {commit}" if commit else "") + (" (dirty)" if version.get("git_dirty") else "")]
        rows.append(row)
    rules = ", ".join(f"{rule} ({kind} groups)" for kind, rule in board.selection.items())
    head = (f"# {board.title}\n\n{board.description.strip()}\n\n" if board.description else f"# {board.title}\n\n")
    return (head + f"Selection: {rules}; one hparam draw per entry (best mean over seeds). Cells: mean ± standard "
            f"error over {board.required_seeds}+ seeds [95% bootstrap interval], in %. Every number is recomputed "
            f"from the listed runs' stored predictions by `harness leaderboard verify {board.name}`; entries are in "
            f"`entries/{board.name}/`.\n\n" + render_table(headers, rows, "markdown") + "\n")


def _flat(stat: dict[str, Any], metric: str) -> dict[str, float]:
    nan = float("nan")
    low, high = stat.get("ci95") or [None, None]
    value = lambda v: nan if v is None else v  # noqa: E731
    return {metric: value(stat.get("mean")), f"{metric}.se": value(stat.get("stderr")),
            f"{metric}.ci_low": value(low), f"{metric}.ci_high": value(high)}
