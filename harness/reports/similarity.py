"""Linear CKA between models: how alike several probe runs' networks represent the same examples
of one task at one layer (e.g. SimCLR, VICReg and supervised at their backbone output), read from
the feature cache their probe runs wrote and matched by example id; a heatmap."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from harness.core import files
from harness.core.errors import HarnessError
from harness.models.representation import cka_matrix
from harness.protocols.transfer import PREDICTIONS
from harness.runs import features
from harness.runs.probe import plot_cka


def run_label(run_dir: Path) -> str:
    """``<algorithm> (<init>) [arm] seed <seed>``: how a probe run is named in the heatmap."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    arm = f" [{cfg['arm']}]" if cfg.get("arm") else ""
    return f"{cfg['algorithm']['name']} ({cfg['probe']['init']}){arm} seed {cfg['seed']}"


def model_cka(run_dirs: list[str | Path], task: str, layer: str, split: str = "test") -> tuple[list[str], np.ndarray]:
    """Labels of the runs and linear CKA between their features of ``layer`` on ``task``'s
    ``split``, on the examples every run probed (the first run's order)."""
    runs = [Path(r) for r in run_dirs]
    ids, caches = None, []
    for run in runs:
        info = json.loads((run / "info.json").read_text())
        try:
            cache = info["features"][task][layer][split]
        except KeyError:
            raise HarnessError(f"probe run {str(run)!r} has no {split} features of layer {layer!r} on task {task!r}; "
                               f"its tasks: {', '.join(info.get('features', {}))}; its layers: "
                               f"{', '.join(info.get('layers', []))}") from None
        run_ids = files.load_arrays(run / PREDICTIONS / task / f"{layer}.npz")[f"{split}.ids"]
        ids = run_ids if ids is None else ids[np.isin(ids, run_ids)]
        caches.append(cache)
    matrix = cka_matrix([features.read_cached(cache, ids) for cache in caches])
    return [run_label(r) for r in runs], matrix


def plot_model_cka(run_dirs: list[str | Path], task: str, layer: str, path: str | Path, split: str = "test") -> np.ndarray:
    """The heatmap of :func:`model_cka` as a PNG; returns the matrix."""
    labels, matrix = model_cka(run_dirs, task, layer, split)
    cells = [[None if np.isnan(v) else float(v) for v in row] for row in matrix]
    plot_cka({f"{task}, {layer}, {split}": {"layers": labels, "matrix": cells}}, Path(path),
             f"linear CKA between {len(labels)} networks")
    return matrix
