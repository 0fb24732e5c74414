"""Collection: every run × evaluated checkpoint of a folder of runs into one pandas frame, each
metric recomputed from the stored arrays (``predictions/step_*.npz``; the files the run's
protocol lists in ``evaluations``, e.g. transfer's per task × layer) by the run's protocol,
never read from ``results.jsonl``; then a selection rule and the seeds aggregated (mean ±
standard error, 95% bootstrap interval of the mean).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from harness.core import files
from harness.core.config import config_hash
from harness.core.errors import HarnessError, shown
from harness.protocols.base import Protocol, protocol
from harness.protocols.selection import choose
from harness.runs import manifest

BOOTSTRAP_RESAMPLES = 2000
BASE_COLUMNS = ("run", "protocol", "algorithm", "dataset", "arm")


def run_folders(root: str | Path) -> tuple[list[Path], list[Path]]:
    """Finished training runs under ``root`` (itself or its subfolders), and unfinished ones.
    Discovery runs (``discovery.json``) are not results and are left out. A finished run may
    still be unusable: :func:`vet` says."""
    root = Path(root)
    if not root.is_dir():
        raise HarnessError(f"{str(root)!r} is not a folder of runs; pass a sweep folder or an output_dir")
    candidates = [root] if (root / "config.yaml").exists() else sorted(p for p in root.iterdir() if p.is_dir())
    runs = [p for p in candidates if (p / "config.yaml").exists() and not (p / "discovery.json").exists()]
    return [p for p in runs if (p / "done").exists()], [p for p in runs if not (p / "done").exists()]


def vet(runs: Iterable[Path], named_by_hash: bool) -> tuple[list[Path], list[str]]:
    """The runs whose files can be trusted, and for each other one why it is left out (naming
    the run and the file). ``named_by_hash``: the runs are trial folders, each named by its
    config's hash."""
    good, left_out = [], []
    for run in runs:
        why = _distrust(run, named_by_hash)
        if why is None:
            good.append(run)
        else:
            left_out.append(f"run {run.name} left out: {why}")
    return good, left_out


def _distrust(run: Path, named_by_hash: bool) -> str | None:
    if not (run / "info.json").exists():
        return "info.json is missing"
    try:
        cfg = files.read_yaml_mapping(run / "config.yaml", "run config")
        info = json.loads((run / "info.json").read_text())
        digest = config_hash(cfg)
    except (HarnessError, json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, KeyError) as exc:
        return f"config.yaml or info.json unreadable ({shown(str(exc))})"
    if not isinstance(info, dict) or info.get("hash") != digest:
        return f"its config.yaml hashes to {digest}, its info.json says {shown(info.get('hash') if isinstance(info, dict) else info)}"
    if named_by_hash and run.name != digest:
        return f"a trial folder is named by its config's hash, this one holds config {digest}"
    return manifest.problem(run)


def runs_code_version(runs: Iterable[Path]) -> Any:
    """The code version the runs recorded (info.json): one version when they agree, else the
    sorted list of the distinct ones (None for runs from before versions were recorded)."""
    versions = {json.dumps(json.loads((run / "info.json").read_text()).get("code_version"), sort_keys=True)
                for run in runs}
    distinct = [json.loads(v) for v in sorted(versions)]
    return distinct[0] if len(distinct) == 1 else distinct


def load_runs(runs: Iterable[str | Path], config_paths: Iterable[str] = ()) -> pd.DataFrame:
    """One row per (run, evaluated checkpoint): the run's identity (its protocol's columns and the
    values of ``config_paths``) and every scalar metric of every split, and the protocol's
    ``choices``, recomputed by the protocol from the stored arrays."""
    rows, identity, metrics = [], [], []
    config_paths = list(config_paths)
    for run in map(Path, runs):
        cfg = files.read_yaml_mapping(run / "config.yaml", "run config")
        info = json.loads((run / "info.json").read_text())
        scorer = protocol(info["protocol"])
        identity += [c for c in (*scorer.columns, *config_paths) if c not in identity]
        metrics += [c for c in (*scorer.metric_columns(), *scorer.choices) if c not in metrics]
        base = {"run": run.name, "protocol": scorer.name, "algorithm": cfg["algorithm"]["name"],
                "dataset": cfg["dataset"]["name"], "arm": cfg.get("arm", ""), **scorer.identity(cfg, run),
                **{p: config_value(cfg, p) for p in config_paths},
                "hparams_seed": cfg["algorithm"]["hparams_seed"], "seed": cfg["seed"],
                "hparams": json.dumps(cfg["algorithm"]["hparams"], sort_keys=True), "path": str(run)}
        for key, path in scorer.evaluations(run):
            scores = scorer.scores(files.load_arrays(path), info)
            rows.append({**base, **key,
                         **{f"{split}.{name}": value for split, m in scores.items() for name, value in m.items()
                            if name in scorer.metrics or f"{split}.{name}" in scorer.choices}})
    columns = [*BASE_COLUMNS, *identity, "hparams_seed", "seed", "step", "hparams", "path", *metrics]
    frame = pd.DataFrame(rows)
    for column in columns:
        if column not in frame:
            frame[column] = pd.Series(dtype=float if column in metrics else object)
    keys = ["protocol", "algorithm", "dataset", *identity, "arm", "hparams_seed", "seed", "step"]
    return frame[columns].sort_values(keys, kind="stable").reset_index(drop=True)


def headline_metrics(runs: Iterable[str | Path], scorer: Protocol) -> list[str]:
    """``test.<metric>`` for each headline metric the runs' datasets name (``headline_metric`` in
    their ``info``: WILDS' official one, e.g. CivilComments' worst group over overlapping
    identities) that ``scorer`` computes, in the order first met."""
    out: list[str] = []
    for run in map(Path, runs):
        info = json.loads((run / "info.json").read_text())
        metric = (info.get("dataset_info") or {}).get("headline_metric")
        if info.get("protocol") == scorer.name and metric in scorer.metrics and f"test.{metric}" not in out:
            out.append(f"test.{metric}")
    return out


def config_value(cfg: dict[str, Any], path: str) -> Any:
    """The value at a dotted config path (JSON text for lists and mappings; None if absent)."""
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return json.dumps(node, sort_keys=True) if isinstance(node, (dict, list)) else node


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value), as DomainBed's tables."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(arr) == 0:
        return float("nan"), float("nan")
    if len(arr) == 1:
        return float(arr[0]), 0.0
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(len(arr)))


def bootstrap_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds (resampled with a fixed generator,
    so the same values give the same interval); NaN for fewer than two values."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan"), float("nan")
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = stats.bootstrap((values,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=confidence,
                             method="percentile", rng=np.random.default_rng(0))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def aggregate(chosen: pd.DataFrame, keys: Sequence[str], metrics: Iterable[str]) -> pd.DataFrame:
    """One row per (entrant ``keys``, rule) from the rows a rule chose (one per seed): the draw,
    seeds, runs and steps, and per metric its mean, standard error and interval."""
    metrics, keys = list(metrics), list(keys)
    rows = []
    for key, part in chosen.groupby([*keys, "rule"], sort=False, dropna=False):
        part = part.sort_values("seed")
        row = dict(zip([*keys, "rule"], key))
        row.update({"hparams_seed": int(part["hparams_seed"].iloc[0]), "n_seeds": part["seed"].nunique(),
                    "seeds": " ".join(str(s) for s in part["seed"]), "runs": " ".join(part["run"]),
                    "steps": " ".join(str(s) for s in part["step"])})
        for metric in metrics:
            values = part[metric].dropna().to_numpy(dtype=float)
            mean, stderr = mean_and_stderr(values)
            low, high = bootstrap_interval(values)
            row.update({metric: mean, f"{metric}.se": stderr, f"{metric}.ci_low": low, f"{metric}.ci_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


def entrant_keys(scorer: Protocol) -> list[str]:
    """What identifies a result in collect's tables: algorithm, dataset, the protocol's columns
    and the sweep arm (an arm's own overrides; empty for runs outside a sweep)."""
    return ["algorithm", "dataset", *scorer.columns, "arm"]


def summarize(frame: pd.DataFrame, scorer: Protocol, rules: Iterable[str], metrics: Iterable[str]) -> pd.DataFrame:
    """Selection by each rule, then seeds aggregated, for the runs of one protocol: the rows of
    the tables ``collect`` prints."""
    part = frame[frame["protocol"] == scorer.name]
    keys = entrant_keys(scorer)
    chosen = [choose(part, scorer.rule(rule), keys) for rule in rules]
    chosen = [c for c in chosen if len(c)]
    return aggregate(pd.concat(chosen, ignore_index=True), keys, metrics) if chosen else pd.DataFrame()
