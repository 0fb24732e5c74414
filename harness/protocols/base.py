"""The protocol contract: what a run of one kind of benchmark stores, and how it is scored.

A protocol is registered like an algorithm (``@PROTOCOLS.register(name)`` on a subclass of
:class:`Protocol`); an algorithm names the protocol it is written for (``Algorithm.protocol``).
The training loop, collect, selection, tables and boards ask the protocol, so that a new kind of
benchmark is one module:

- ``prepare`` / ``build`` / ``sampling`` / ``batch``: what a run trains on;
- ``record``: the named arrays a run stores per split at each evaluation;

these run-loop methods concern protocols whose runs train through the loop (``harness.runs.run``);
a protocol whose runs are written by another trial kind (``transfer``: probes of a frozen
network) leaves them out. Every protocol scores:

- ``evaluations``: a run's stored arrays files, each with the frame columns that tell it apart
  (by default one per checkpoint, ``predictions/step_N.npz``, told apart by ``step``);
- ``scores``: ONE function from those arrays and the run's ``info.json`` to the metrics of every
  split. The loop's ``results.jsonl`` and every later recomputation (``collect``, ``verify``)
  call it, so the two can never disagree;
- ``rules``: selection rules (split, metric, direction, what they need); ``metrics``: which
  scalar metrics frames and tables carry and how they display; ``columns``: what, besides the
  algorithm and dataset, identifies a run's arm in a frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from harness.core.errors import HarnessError, unknown
from harness.core.registry import PROTOCOLS
from harness.data.dataset import ShiftDataset, Split
from harness.models.algorithm import HeldOut


@dataclass(frozen=True)
class Rule:
    """A selection rule: maximise (or minimise) ``split.metric`` over checkpoints. With
    ``last_checkpoint`` every run keeps its last evaluated checkpoint and the metric only picks
    the hparam draw."""

    name: str
    split: str
    metric: str
    higher_is_better: bool = True
    needs: str = ""
    last_checkpoint: bool = False

    @property
    def column(self) -> str:
        return f"{self.split}.{self.metric}"

    def key(self, value: float) -> float:
        """A sort key where larger is better, whatever the rule's direction."""
        return value if self.higher_is_better else -value


@dataclass(frozen=True)
class Display:
    """How a metric shows in tables: as a percentage (×100) or raw, with this many decimals."""

    label: str
    percent: bool = True
    precision: int = 1

    def format(self, value: float) -> str:
        return f"{(100 * value if self.percent else value):.{self.precision}f}"


class Protocol:
    """Base class of protocols. Subclasses set the class attributes and implement the methods."""

    splits: tuple[str, ...] = ("train", "val", "test")
    # whether runs of this protocol accept unlabelled examples (pretraining data)
    unlabelled_ok: bool = False
    # Examples of the train split a run evaluates when eval_train_size is auto (0: all): a fixed,
    # seeded subset (harness.runs.run.evaluation_plan)
    train_eval_size: int = 0
    metrics: dict[str, Display] = {}
    rules: tuple[Rule, ...] = ()
    reported: tuple[str, ...] = ()       # default ``split.metric`` columns of collect's tables
    columns: tuple[str, ...] = ()        # identity columns besides algorithm and dataset
    progress: tuple[str, ...] = ()       # ``split.metric`` values shown on the progress bar
    # A small registered dataset (name, options) its algorithms train on offline in seconds: the
    # conformance checks build every algorithm of the protocol on it.
    small_dataset: tuple[str, dict[str, Any]] = ("colored_digits", {})

    def __init__(self, name: str):
        self.name = name

    def rule(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise unknown(f"selection rule of protocol {self.name}", name, [r.name for r in self.rules])

    def metric_columns(self) -> list[str]:
        return [f"{s}.{m}" for s in self.splits for m in self.metrics]

    # --- a run -------------------------------------------------------------------------------
    def prepare(self, cfg: dict[str, Any], dataset: ShiftDataset, device: torch.device) -> Any:
        """What the run needs besides the dataset (e.g. training groups); checked before anything
        is written, so bad input raises here."""
        return None

    def build(self, algorithm: type, backbone: Callable[[], nn.Module], cfg: dict[str, Any],
              dataset: ShiftDataset, state: Any) -> nn.Module:
        raise NotImplementedError

    def info(self, cfg: dict[str, Any], dataset: ShiftDataset, state: Any) -> dict[str, Any]:
        """What ``scores`` needs besides the stored arrays (written to ``info.json``)."""
        return {}

    def hold_out(self, dataset: ShiftDataset, state: Any, seed: int) -> HeldOut:
        """For an algorithm that fits on validation examples (``holds_out_validation``): a seeded
        part of the validation split for it; the dataset's and state's validation keep the rest."""
        raise HarnessError(f"protocol {self.name} holds out no validation examples for an algorithm")

    def sampling(self, algo: nn.Module, dataset: ShiftDataset, state: Any) -> tuple[torch.Tensor | None,
                                                                                    torch.Tensor | None]:
        """Training positions to draw from (None: all) and sampling weights (None: uniform)."""
        return None, None

    def batch(self, split: Split, positions: torch.Tensor, state: Any) -> Any:
        raise NotImplementedError

    def record(self, algo: nn.Module, name: str, split: Split, state: Any, batch_size: int) -> dict[str, np.ndarray]:
        """The arrays stored for split ``name`` at an evaluation (keys without the split prefix)."""
        raise NotImplementedError

    def restrict(self, name: str, split: Split, state: Any, positions: torch.Tensor) -> tuple[Split, Any]:
        """Split ``name`` and the run's state cut to the examples at ``positions``, for ``record``
        on a subset; a protocol whose state holds per-example arrays of the split cuts them too."""
        return split.subset(positions), state

    def scores(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Metrics per split from the stored arrays (keys ``<split>.<array>``) and the run's info."""
        raise NotImplementedError

    def pictures(self, algo: nn.Module, split: Split, path: Path) -> Path:
        """Draw what a trained model does on a split (reconstructions, traversals) into a PNG."""
        raise HarnessError(f"protocol {self.name} draws no pictures")

    def identity(self, cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        """Values of ``columns`` for a run, from its config (and folder)."""
        return {}

    def evaluations(self, run_dir: Path) -> list[tuple[dict[str, Any], Path]]:
        """A run's stored arrays files, each with the frame columns that tell it apart (at least
        ``step``): by default one per evaluated checkpoint, ``predictions/step_N.npz``."""
        return [({"step": int(p.stem.split("_")[1])}, p) for p in sorted((run_dir / "predictions").glob("step_*.npz"))]

    # --- boards ------------------------------------------------------------------------------
    selection_kinds: tuple[str, ...] = ()

    def selection_kind(self, entrant: dict[str, Any]) -> str:
        """Which of a board's per-kind rules applies to an entrant (boards may map kinds to rules)."""
        raise NotImplementedError(f"protocol {self.name} has one selection rule per board")


def protocol(name: str) -> Protocol:
    """The registered protocol ``name``, instantiated."""
    entry = PROTOCOLS.get(name)
    return entry.obj(entry.name)
