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
import re
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.errors import HarnessError
from harness.core.registry import PROTOCOLS
from harness.models.probes import choose_c
from harness.models.representation import rankme
from harness.protocols.base import Display, Protocol, Rule
from harness.protocols.compact import CompactForm, lossless_float, small_int

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
        out: dict[str, dict[str, Any]] = {split: {} for split in self.splits}
        for split in self.splits:  # a run stores every array; compact predictions what a board reads
            m = out[split]
            if f"{split}.probe" in arrays:
                m["probe_acc"] = _accuracy(arrays[f"{split}.y"], arrays[f"{split}.probe"])
            if f"{split}.spectrum" in arrays:
                m["rankme"] = rankme(arrays[f"{split}.spectrum"])
            if f"{split}.knn" in arrays:
                m["knn_acc"] = _accuracy(arrays[f"{split}.y"], arrays[f"{split}.knn"])
        out["val"]["C"] = float(arrays["cs"][chosen])
        return {split: m for split, m in out.items() if m}

    def evaluations(self, run_dir: Path) -> list[tuple[dict[str, Any], Path]]:
        """One per task and layer; ``step`` is the layer's depth (0: the shallowest probed), so
        that a rule's ties go to the shallower layer."""
        depth = {layer: i for i, layer in enumerate(json.loads((run_dir / "info.json").read_text())["layers"])}
        return [({"dataset": p.parent.name, "layer": p.stem, "step": depth[p.stem]}, p)
                for p in sorted((run_dir / PREDICTIONS).glob("*/*.npz"))]

    def identity(self, cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        return {"init": cfg["probe"]["init"], "pretrain_dataset": cfg["dataset"]["name"]}

    def compact_form(self) -> CompactForm:
        return ProbePredictions()


class ProbePredictions(CompactForm):
    """Transfer's compact form, per task and layer of a probe run: every candidate C's predicted
    classes on validation and the C grid (what the C choice and the ``val-probe`` rule read, at
    every layer), and where the board's metrics read them, at the layers the entry's selection
    picked, the chosen C's predicted classes (``probe``) and the kNN's (``knn``) on the metric's
    split and the split's feature spectrum (RankMe; float32 only where that is exact, else
    float64). The validation predictions at the chosen C are the chosen row of the per-C ones, so
    they are not shipped twice; a predicted class equal to the example's label is written -1
    (``encode``). The reference publishes each task's ids and labels."""

    labels = ("y",)
    selected_only = True
    evaluations_name_dataset = True
    file_pattern = "<depth>_<layer>"
    ALWAYS = frozenset({"val.probe_by_c", "cs"})  # the C choice, which every evaluation's scores check
    PER_METRIC = (("probe_acc", "probe"), ("knn_acc", "knn"), ("rankme", "spectrum"))
    paired = {"probe_acc": ("probe", None), "knn_acc": ("knn", None)}
    NAME = re.compile(r"(\d{1,4})_([A-Za-z0-9_.-]{1,64})")

    def needs(self, column: str) -> set[str]:
        split, metric = column.split(".", 1)
        if metric == "C" or (split, metric) == ("val", "probe_acc"):
            return set(self.ALWAYS)
        return {f"{split}.{dict(self.PER_METRIC)[metric]}", *self.ALWAYS}

    def shrink(self, stored: dict[str, np.ndarray], splits: list[str], columns: set[str],
               info: dict[str, Any]) -> dict[str, np.ndarray]:
        names = set().union(self.ALWAYS, *(self.needs(c) for c in columns))
        return {name: self.pack(name, stored[name], {}) for name in sorted(names, key=lambda n: (n == "cs", n))}

    def pack(self, name: str, values: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
        if name == "cs":
            return np.asarray(values, dtype=np.float64)
        if name.endswith(".spectrum"):
            return lossless_float(values)
        return small_int(values, int(values.max(initial=0)))

    def encode(self, name: str, values: np.ndarray, labels: dict[str, np.ndarray]) -> np.ndarray:
        """A predicted class equal to the label ships as -1: most are, so the file compresses
        about 3x better than the classes themselves (decoded exactly with the reference)."""
        if not name.endswith((".probe", ".knn", ".probe_by_c")):
            return values
        return np.where(values == labels["y"], -1, values).astype(values.dtype)

    def decode(self, name: str, values: np.ndarray, labels: dict[str, np.ndarray]) -> np.ndarray:
        if not name.endswith((".probe", ".knn", ".probe_by_c")):
            return values
        return np.where(values < 0, labels["y"], values)

    def expand(self, shipped: dict[str, np.ndarray], ref: dict[str, np.ndarray], meta: dict[str, Any],
               run: dict[str, Any], entrant: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {k: (v.astype(np.int64) if v.dtype.kind in "iu" else v) for k, v in shipped.items()}
        for split in meta["splits"]:
            arrays[f"{split}.y"] = ref[f"{split}.y"]
        by_c = arrays["val.probe_by_c"]
        arrays["val.probe"] = by_c[choose_c(by_c, arrays["val.y"])]
        return arrays, {}

    def check(self, name: str, values: np.ndarray, examples: int | None, meta: dict[str, Any]) -> str | None:
        kind = name.split(".", 1)[-1]
        if kind in ("spectrum", "cs"):
            if values.ndim != 1 or values.dtype.kind != "f" or not len(values) or not np.isfinite(values).all() or (
                    values < 0).any() or (kind == "cs" and (values <= 0).any()):
                return f"{name} must be a non-empty 1-D array of finite numbers >= 0 ({'> 0 ' if kind == 'cs' else ''}" \
                       f"for C), got {values.dtype} of shape {values.shape}"
            return None
        shape = (values.shape[-1:] if kind == "probe_by_c" else values.shape)
        if values.dtype.kind not in "iu" or values.ndim != (2 if kind == "probe_by_c" else 1) or shape != (examples,):
            return (f"{name} must be {'a (Cs x ids)' if kind == 'probe_by_c' else 'a 1-D'} integer array of one class "
                    f"per id ({examples}), got {values.dtype} of shape {values.shape}")
        if len(values.ravel()) and (values.min() < 0 or values.max() > 10_000):
            return f"{name} must be classes 0..10000"
        return None

    def consistent(self, arrays: dict[str, np.ndarray]) -> str | None:
        rows, cs = arrays["val.probe_by_c"].shape[0], len(arrays["cs"])
        if rows != cs:
            return f"val.probe_by_c must have one row per C of cs ({cs}), got {rows}"
        return None

    def scope(self, key: dict[str, Any]) -> str:
        return f"{key['dataset']}/{self.file_stem(key)}"

    def key(self, scope: str) -> dict[str, Any] | None:
        dataset, _, stem = scope.partition("/")
        return self.file_key(stem, dataset) if stem else None

    def run_scope(self, key: dict[str, Any]) -> str:
        return str(key["dataset"])

    def file_stem(self, key: dict[str, Any]) -> str:
        return f"{int(key['step'])}_{key['layer']}"

    def file_key(self, stem: str, dataset: str) -> dict[str, Any] | None:
        match = self.NAME.fullmatch(stem)
        return {"dataset": dataset, "layer": match.group(2), "step": int(match.group(1))} if match else None


def _accuracy(y: np.ndarray, predicted: np.ndarray) -> float | None:
    return float(np.mean(y == predicted)) if len(y) else None
