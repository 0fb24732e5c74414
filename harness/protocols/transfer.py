"""The transfer protocol: a frozen network (a pretraining run's checkpoint or a random
initialisation) probed at every named layer on downstream tasks (``harness.data.tasks``).

A probe run (trial kind ``probe``, ``harness.runs.probe``) stores one arrays file per task and
layer, ``predictions/<task>/<layer>.npz``: per split the example ids, the task's labels, the
linear probe's and the kNN's predicted classes and the feature spectrum, plus the candidate Cs
and every candidate's validation predictions. :meth:`Transfer.scores` recomputes from them the
probe and kNN accuracies, RankMe, and the C chosen on validation (checked against the stored
predictions). In collect's frame a probe run has one row per task and layer: the ``dataset``
column is the downstream task, ``pretrain_dataset`` what the network was trained on, ``layer``
the layer probed, ``step`` the layer's depth. A rule picks among a run's rows of one task: with
``layer`` among the entrant's keys, one row per layer; without it, the best layer on validation.
A task keeps its dataset's splits and their shift: colored datasets' labels agree with the colour
in training and validation but not in test, so a probe of the label that reads colour fails there.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.errors import HarnessError
from harness.core.registry import PROTOCOLS
from harness.models.probes import choose_c
from harness.models.representation import rankme
from harness.protocols.base import Display, Protocol, Rule

PREDICTIONS = "predictions"


@PROTOCOLS.register("transfer")
class Transfer(Protocol):
    """Frozen features probed at every layer on downstream tasks: probe and kNN accuracy, RankMe."""

    trains = False  # probe trials (harness.runs.probe) write its runs, not the training loop
    metrics = {
        "probe_acc": Display("linear probe acc"),
        "knn_acc": Display("kNN acc"),
        "rankme": Display("RankMe", percent=False, precision=1),
    }
    rules = (
        Rule("val-probe", "val", "probe_acc", needs="the task's validation labels"),
        Rule("oracle", "test", "probe_acc", needs="the task's test labels (an upper bound, not a result)"),
    )
    choices = {"val.C": "C chosen on val, per seed"}
    reported = ("test.probe_acc", "test.knn_acc", "train.rankme")
    columns = ("init", "pretrain_dataset", "layer")

    def scores(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> dict[str, dict[str, Any]]:
        chosen = choose_c(arrays["val.probe_by_c"], arrays["val.y"])
        if not np.array_equal(arrays["val.probe_by_c"][chosen], arrays["val.probe"]):
            raise HarnessError("stored validation predictions of the linear probe are not those of the C that "
                               "validation chooses; the arrays file was altered or written by another rule")
        out = {}
        for split in self.splits:
            y = arrays[f"{split}.y"]
            m: dict[str, Any] = {"probe_acc": _accuracy(y, arrays[f"{split}.probe"]),
                                 "rankme": rankme(arrays[f"{split}.spectrum"])}
            if f"{split}.knn" in arrays:
                m["knn_acc"] = _accuracy(y, arrays[f"{split}.knn"])
            out[split] = m
        out["val"]["C"] = float(arrays["cs"][chosen])
        return out

    def evaluations(self, run_dir: Path) -> list[tuple[dict[str, Any], Path]]:
        """One per task and layer; ``step`` is the layer's depth (0: the shallowest probed), so
        that a rule's ties go to the shallower layer."""
        depth = {layer: i for i, layer in enumerate(json.loads((run_dir / "info.json").read_text())["layers"])}
        return [({"dataset": p.parent.name, "layer": p.stem, "step": depth[p.stem]}, p)
                for p in sorted((run_dir / PREDICTIONS).glob("*/*.npz"))]

    def identity(self, cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        return {"init": cfg["probe"]["init"], "pretrain_dataset": cfg["dataset"]["name"]}


def _accuracy(y: np.ndarray, predicted: np.ndarray) -> float | None:
    return float(np.mean(y == predicted)) if len(y) else None
