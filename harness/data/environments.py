"""The files a discovery writes into its run folder, and reading them back.

    environments.npz   per split (train, val): ``<split>.ids`` (example ids), ``<split>.y`` (labels)
                       and ``<split>.env`` (0/1, 1 = the minority "mistake" environment), all ints
    discovery.json     the report (see ``harness.runs.discovery``); written last, so its presence
                       marks a complete discovery

Group sources read these through :func:`load_environments` and :func:`read_report`;
:func:`best_discovery` chooses among several discoveries.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from harness.core import files
from harness.core.errors import HarnessError

ENVIRONMENTS_FILE = "environments.npz"
REPORT_FILE = "discovery.json"
PLOT_FILE = "flip_rate.png"
DISCOVERY_SPLITS = ("train", "val")


def save_environments(run_dir: str | Path, envs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """``envs[split] = (ids, y, env)``."""
    arrays = {}
    for split, (ids, y, env) in envs.items():
        arrays.update({f"{split}.ids": np.asarray(ids, dtype=np.int64), f"{split}.y": np.asarray(y, dtype=np.int64),
                       f"{split}.env": np.asarray(env, dtype=np.int64)})
    files.save_arrays(Path(run_dir) / ENVIRONMENTS_FILE, **arrays)


def _require(run_dir: Path) -> None:
    if not (run_dir / REPORT_FILE).exists() or not (run_dir / ENVIRONMENTS_FILE).exists():
        raise HarnessError(f"{str(run_dir)!r} is not a finished discovery run folder (it has no {REPORT_FILE} "
                           f"and {ENVIRONMENTS_FILE}); make one with `harness discover algorithm.name=xrm ...` "
                           "and pass the run folder it prints")


def load_environments(run_dir: str | Path, with_labels: bool = False) -> dict[str, tuple[np.ndarray, ...]]:
    """``{split: (ids, env)}`` for train and val (``(ids, y, env)`` with ``with_labels``)."""
    run_dir = Path(run_dir)
    _require(run_dir)
    arrays = files.load_arrays(run_dir / ENVIRONMENTS_FILE)
    keys = ("ids", "y", "env") if with_labels else ("ids", "env")
    return {split: tuple(arrays[f"{split}.{k}"] for k in keys) for split in DISCOVERY_SPLITS}


def read_report(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    _require(run_dir)
    return json.loads((run_dir / REPORT_FILE).read_text())


def best_discovery(run_dirs: Iterable[str | Path]) -> Path:
    """XRM's annotation-free tuning recipe: among finished discoveries, the one with the largest
    final flip rate, degenerate ones left out (ties: the first given).

    A single discovery is returned as it is (nothing to choose; a degenerate one is refused).
    Among several, it applies only to discoveries with a flip rate: JTT-style error sets have no
    annotation-free criterion for choosing among them (their T was tuned on annotated
    validation groups), so passing several is an error rather than a silent arbitrary pick.
    """
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise HarnessError("best_discovery needs at least one discovery run folder")
    candidates = []
    for d in dirs:
        report = read_report(d)
        if report["flip_rate"] is None and len(dirs) > 1:
            raise HarnessError(f"discovery {str(d)!r} ({report['algorithm']}) has no flip rate; best_discovery picks "
                               "by final flip rate (XRM), and error-set discoveries have no annotation-free "
                               "criterion: choose one of them yourself")
        if not report["degenerate"]:
            candidates.append((report["flip_rate"] or 0.0, -len(candidates), d))
    if not candidates:
        raise HarnessError(f"all {len(dirs)} discoveries are degenerate (a class did not split into two "
                           "environments); run more hyperparameter draws or seeds")
    return max(candidates)[2]
