"""Collection: every run × evaluated checkpoint of a folder of runs into one pandas frame, each
metric recomputed from the stored predictions (``predictions/step_*.npz``) with
``harness.protocols.classification``, never read from ``results.jsonl``; then a selection rule and the seeds
aggregated (mean ± standard error, 95% bootstrap interval of the mean).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from harness.core import files
from harness.core.config import INFERRED
from harness.core.errors import HarnessError
from harness.protocols.classification import classification_metrics, mean_and_stderr
from harness.protocols.selection import SWEEP_KEYS, choose

SPLITS = ("train", "val", "test")
METRICS = ("avg_acc", "worst_group_acc", "worst_class_acc", "balanced_acc", "adjusted_avg_acc",
           "source_worst_group_acc", "loss")
DEFAULT_REPORTED = ("test.worst_group_acc", "test.avg_acc", "test.worst_class_acc")
BOOTSTRAP_RESAMPLES = 2000


def run_folders(root: str | Path) -> tuple[list[Path], list[Path]]:
    """Finished training runs under ``root`` (itself or its subfolders), and unfinished ones.
    Discovery runs (``discovery.json``) are not results and are left out."""
    root = Path(root)
    if not root.is_dir():
        raise HarnessError(f"{str(root)!r} is not a folder of runs; pass a sweep folder or an output_dir")
    candidates = [root] if (root / "config.yaml").exists() else sorted(p for p in root.iterdir() if p.is_dir())
    runs = [p for p in candidates if (p / "config.yaml").exists() and (p / "info.json").exists()
            and not (p / "discovery.json").exists()]
    return [p for p in runs if (p / "done").exists()], [p for p in runs if not (p / "done").exists()]


def load_runs(runs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (run, evaluated checkpoint): the run's identity and every metric of every split."""
    rows = []
    for run in map(Path, runs):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        info = json.loads((run / "info.json").read_text())
        base = {"run": run.name, "algorithm": cfg["algorithm"]["name"], "dataset": cfg["dataset"]["name"],
                "groups": group_label(cfg["groups"], run.parent), "hparams_seed": cfg["algorithm"]["hparams_seed"],
                "seed": cfg["seed"], "hparams": json.dumps(cfg["algorithm"]["hparams"], sort_keys=True),
                "path": str(run)}
        for path in sorted((run / "predictions").glob("step_*.npz")):
            step = int(path.stem.split("_")[1])
            metrics = checkpoint_metrics(files.load_arrays(path), info)
            rows.append({**base, "step": step, **{f"{split}.{name}": value for split, m in metrics.items()
                                                  for name, value in m.items() if name in METRICS}})
    columns = ["run", *SWEEP_KEYS, "hparams_seed", "seed", "step", "hparams", "path",
               *(f"{s}.{m}" for s in SPLITS for m in METRICS)]
    frame = pd.DataFrame(rows)
    for column in columns:
        if column not in frame:
            frame[column] = pd.Series(dtype=float if "." in column else object)
    return frame[columns].sort_values(["algorithm", "dataset", "groups", "hparams_seed", "seed", "step"],
                                      kind="stable").reset_index(drop=True)


def checkpoint_metrics(arrays: dict[str, np.ndarray], info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The metrics of one evaluated checkpoint, per split, from its stored predictions: annotated
    groups for every split; the group source's groups (``source_*``) where they are not the
    annotated ones. The same computation the run made when it logged them."""
    out = {}
    for split in SPLITS:
        if f"{split}.y" not in arrays:
            continue
        y, probs = arrays[f"{split}.y"], arrays[f"{split}.probs"]
        m = classification_metrics(y, probs, arrays[f"{split}.attr"], info["num_groups"], info["num_classes"],
                                   info.get("group_weights"))
        source = arrays[f"{split}.group"]
        if info["group_source"] != "annotated" and info["source_num_groups"] and (source >= 0).any():
            s = classification_metrics(y, probs, source, info["source_num_groups"], info["num_classes"])
            m["source_worst_group_acc"] = s["worst_group_acc"]
        out[split] = m
    return out


def group_label(groups: str, parent: Path) -> str:
    """A run's group source as tables show it: ``inferred:<discovery algorithm>`` for a
    discovery run folder (found at its path, or by name beside the run if the sweep moved)."""
    if not groups.startswith(INFERRED):
        return groups
    folder = Path(groups[len(INFERRED):])
    for candidate in (folder, parent / folder.name):
        if (candidate / "config.yaml").exists():
            return INFERRED + yaml.safe_load((candidate / "config.yaml").read_text())["algorithm"]["name"]
    return INFERRED + folder.name


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


def aggregate(chosen: pd.DataFrame, metrics: Iterable[str] = DEFAULT_REPORTED) -> pd.DataFrame:
    """One row per (algorithm, dataset, group source, rule) from the rows a rule chose (one per
    seed): the draw, seeds, runs and steps, and per metric its mean, standard error and interval."""
    metrics = list(metrics)
    rows = []
    for key, part in chosen.groupby([*SWEEP_KEYS, "rule"], sort=False):
        part = part.sort_values("seed")
        row = dict(zip([*SWEEP_KEYS, "rule"], key))
        row.update({"hparams_seed": int(part["hparams_seed"].iloc[0]), "n_seeds": len(part),
                    "seeds": " ".join(str(s) for s in part["seed"]), "runs": " ".join(part["run"]),
                    "steps": " ".join(str(s) for s in part["step"])})
        for metric in metrics:
            values = part[metric].dropna().to_numpy(dtype=float)
            mean, stderr = mean_and_stderr(values)
            low, high = bootstrap_interval(values)
            row.update({metric: mean, f"{metric}.se": stderr, f"{metric}.ci_low": low, f"{metric}.ci_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame, rules: Iterable[str], metrics: Iterable[str] = DEFAULT_REPORTED) -> pd.DataFrame:
    """Selection by each rule, then seeds aggregated: the rows of every table ``collect`` prints."""
    chosen = [choose(frame, rule) for rule in rules]
    chosen = [c for c in chosen if len(c)]
    return aggregate(pd.concat(chosen, ignore_index=True), metrics) if chosen else pd.DataFrame()
