"""The protocol contract: what a run of one kind of benchmark stores, and how it is scored.

A protocol is registered like an algorithm (``@PROTOCOLS.register(name)`` on a subclass of
:class:`Protocol`); an algorithm names the protocol it is written for (``Algorithm.protocol``).
The training loop, collect, selection, tables and boards ask the protocol, so that a new kind of
benchmark is one module. A protocol implements only what it needs; every other method has a
documented default.

Required of every protocol: ``scores``, ONE function from a run's stored arrays and its
``info.json`` to the metrics of every split (the loop's ``results.jsonl`` and every later
recomputation, ``collect`` and ``verify``, call it, so the two can never disagree), and at least
one selection rule in ``rules`` with the ``metrics`` it selects on.

Required of a protocol whose runs train through the loop (``harness.runs.run``; ``trains = True``,
the default): ``build`` (the algorithm), ``batch`` (what one training step receives) and
``record`` (the named arrays a run stores per split at each evaluation). A protocol whose runs
another trial kind writes (``transfer``: probes of a frozen network) sets ``trains = False`` and
implements none of them; the loop refuses its algorithms.

Optional, with defaults: ``prepare`` (no state), ``info`` (nothing), ``sampling`` (every training
example, uniformly), ``restrict`` (the split's subset, the state as is), ``hold_out`` (refused),
``evaluations`` (one arrays file per checkpoint, ``predictions/step_N.npz``), ``identity`` and
``columns`` (nothing besides algorithm and dataset), ``pictures`` (refused), ``selection_kind``
(none: a board selects by one rule), ``compact_form``
(None: no compact form, so its boards' entries ship no predictions and verify from their runs).

A missing required method is a TypeError naming it when the protocol is instantiated
(:func:`protocol`), not a NotImplementedError in the middle of a run.
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
from harness.protocols.compact import CompactForm


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
    """Base class of protocols: subclasses set the class attributes and override ``scores``, and
    ``build``, ``batch`` and ``record`` unless ``trains`` is False; the other methods have defaults."""

    # Whether runs of this protocol train through the loop (harness.runs.run). False: another
    # trial kind writes them (transfer's probe trials); build, batch and record are not needed.
    trains: bool = True
    splits: tuple[str, ...] = ("train", "val", "test")
    # whether runs of this protocol accept unlabelled examples (pretraining data)
    unlabelled_ok: bool = False
    # Examples of the train split a run evaluates when eval_train_size is auto (0: all): a fixed,
    # seeded subset (harness.runs.run.evaluation_plan)
    train_eval_size: int = 0
    metrics: dict[str, Display] = {}
    # Values its scores report that a run chose rather than measured (``split.name``: a label),
    # e.g. transfer's probe C chosen on validation: collect's frame has them; a board entry records
    # each chosen run's, and its table shows them per seed; they are never averaged.
    choices: dict[str, str] = {}
    # Metrics whose value recomputed from the same predictions on another machine may differ in
    # the last digits (a model fitted at scoring time: its floating-point sums, and so its
    # tie-breaks, follow the CPU's vector width), with the absolute difference a board's
    # verification allows them; every other number must agree to 1e-9.
    tolerances: dict[str, float] = {}
    rules: tuple[Rule, ...] = ()
    reported: tuple[str, ...] = ()       # default ``split.metric`` columns of collect's tables
    columns: tuple[str, ...] = ()        # identity columns besides algorithm and dataset
    progress: tuple[str, ...] = ()       # ``split.metric`` values shown on the progress bar
    # A small registered dataset (name, options) its algorithms train on offline in seconds: the
    # conformance checks build every algorithm of the protocol on it.
    small_dataset: tuple[str, dict[str, Any]] = ("colored_digits", {})
    selection_kinds: tuple[str, ...] = ()  # kinds of entrant a board may give rules of their own

    REQUIRED: tuple[str, ...] = ("scores",)
    REQUIRED_TO_TRAIN: tuple[str, ...] = ("build", "batch", "record")

    def __init__(self, name: str):
        missing = self.missing()
        if missing:
            raise TypeError(f"protocol {name!r} ({type(self).__name__}) does not implement {', '.join(missing)}"
                            + ("; a protocol whose runs do not train through the loop sets trains = False"
                               if set(missing) & set(self.REQUIRED_TO_TRAIN) else ""))
        self.name = name

    @classmethod
    def missing(cls) -> list[str]:
        """The required methods this protocol leaves to the base class."""
        required = cls.REQUIRED + (cls.REQUIRED_TO_TRAIN if cls.trains else ())
        return [m for m in required if getattr(cls, m) is getattr(Protocol, m)]

    def rule(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise unknown(f"selection rule of protocol {self.name}", name, [r.name for r in self.rules])

    def metric_columns(self) -> list[str]:
        return [f"{s}.{m}" for s in self.splits for m in self.metrics]

    # --- scoring: every protocol -------------------------------------------------------------
    def scores(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Required. Metrics per split from the stored arrays (keys ``<split>.<array>``) and the run's info."""
        raise NotImplementedError  # unreachable: __init__ refuses a protocol without scores

    def evaluations(self, run_dir: Path) -> list[tuple[dict[str, Any], Path]]:
        """A run's stored arrays files, each with the frame columns that tell it apart (at least
        ``step``): by default one per evaluated checkpoint, ``predictions/step_N.npz``."""
        return [({"step": int(p.stem.split("_")[1])}, p) for p in sorted((run_dir / "predictions").glob("step_*.npz"))]

    def identity(self, cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        """Values of ``columns`` for a run, from its config (and folder); by default none."""
        return {}

    def pictures(self, algo: nn.Module, split: Split, path: Path) -> Path:
        """Draw what a trained model does on a split (reconstructions, traversals) into a PNG;
        by default a protocol draws none."""
        raise HarnessError(f"protocol {self.name} draws no pictures")

    def compact_form(self) -> CompactForm | None:
        """What a board entry ships of each candidate run so that ``harness leaderboard verify``
        recomputes its numbers with no runs present, and what a submission bundle holds
        (:mod:`harness.protocols.compact`). By default None: the protocol has no compact form;
        its boards' entries verify from their runs only and take no bundles."""
        return None

    def selection_kind(self, entrant: dict[str, Any]) -> str:
        """Which of ``selection_kinds`` an entrant is, for a board with a rule per kind; by
        default a protocol has no kinds and its boards select by one rule."""
        raise HarnessError(f"protocol {self.name} has no kinds of entrant; its boards select by one rule")

    # --- a run through the loop (trains = True) ----------------------------------------------
    def build(self, algorithm: type, backbone: Callable[[], nn.Module], cfg: dict[str, Any],
              dataset: ShiftDataset, state: Any) -> nn.Module:
        """Required to train. The algorithm of the run, built from its class, a backbone factory,
        the config, the dataset and ``prepare``'s state."""
        raise NotImplementedError  # unreachable: __init__ refuses a training protocol without build

    def batch(self, split: Split, positions: torch.Tensor, state: Any) -> Any:
        """Required to train. What one training step's ``algo.update`` receives for the training
        examples at ``positions``."""
        raise NotImplementedError  # unreachable: __init__ refuses a training protocol without batch

    def record(self, algo: nn.Module, name: str, split: Split, state: Any, batch_size: int) -> dict[str, np.ndarray]:
        """Required to train. The arrays stored for split ``name`` at an evaluation (keys
        without the split prefix): what ``scores`` reads back."""
        raise NotImplementedError  # unreachable: __init__ refuses a training protocol without record

    def prepare(self, cfg: dict[str, Any], dataset: ShiftDataset, device: torch.device) -> Any:
        """What the run needs besides the dataset (e.g. training groups); checked before anything
        is written, so bad input raises here. By default nothing (None)."""
        return None

    def info(self, cfg: dict[str, Any], dataset: ShiftDataset, state: Any) -> dict[str, Any]:
        """What ``scores`` needs besides the stored arrays (written to ``info.json``); by default nothing."""
        return {}

    def sampling(self, algo: nn.Module, dataset: ShiftDataset, state: Any) -> tuple[torch.Tensor | None,
                                                                                    torch.Tensor | None]:
        """Training positions to draw from (None: all) and sampling weights (None: uniform); by
        default every training example, uniformly."""
        return None, None

    def restrict(self, name: str, split: Split, state: Any, positions: torch.Tensor) -> tuple[Split, Any]:
        """Split ``name`` and the run's state cut to the examples at ``positions``, for ``record``
        on a subset; by default the split's subset and the state as it is (a protocol whose state
        holds per-example arrays of the split cuts them too)."""
        return split.subset(positions), state

    def hold_out(self, dataset: ShiftDataset, state: Any, seed: int) -> HeldOut:
        """For an algorithm that fits on validation examples (``holds_out_validation``): a seeded
        part of the validation split for it; the dataset's and state's validation keep the rest.
        By default a protocol holds out nothing, and such an algorithm is refused."""
        raise HarnessError(f"protocol {self.name} holds out no validation examples for an algorithm")


def protocol(name: str) -> Protocol:
    """The registered protocol ``name``, instantiated."""
    entry = PROTOCOLS.get(name)
    return entry.obj(entry.name)
