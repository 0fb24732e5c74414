"""The algorithm contract: a short class with ``update`` and ``predict`` (DomainBed's shape).

An algorithm receives a backbone *factory* (so that twin methods such as XRM can build two),
the number of classes and training groups, its resolved hyperparameters and the training split's
size (for per-example state). The training loop asks it once which training examples to draw and
with which weights (``sampling``), then calls ``update`` on each batch.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.registry import Hparam, choice, log_uniform
from harness.data.dataset import Split


@dataclass
class Batch:
    """A training batch. ``index`` is each example's position in the training split (for
    per-example state); ``g`` its training group, -1 where the group source gives none."""

    x: torch.Tensor
    y: torch.Tensor
    g: torch.Tensor
    index: torch.Tensor


@dataclass
class HeldOut:
    """Validation examples handed to an algorithm that fits part of itself on them (DFR): the
    examples (``split``), their training-source groups and the run's seed (for its own draws)."""

    split: Split
    g: torch.Tensor
    seed: int


OPTIMIZERS = ("adam", "adamw", "sgd")


class Algorithm(nn.Module):
    """Base class: a backbone and a linear head trained with cross-entropy."""

    protocol = "worst_group"  # the protocol (harness.protocols) that trains and scores it
    needs_groups = False
    # True for methods whose every parameter update goes through ``step`` (so a data-parallel run
    # can average gradients there) and whose loss is a mean over the batch's examples (or gathers
    # across ranks what is not): only those run on several ranks (harness.runs.distributed)
    data_parallel = False
    # The splits a run evaluates when eval_splits is auto: None for the protocol's (all of them)
    evaluates: tuple[str, ...] | None = None
    # True for methods that fit part of themselves on validation examples (DFR's last layer): the
    # run then sets ``held_out`` to a seeded half of validation, each training group halved, and
    # stores, scores and selects on the other half only (the protocol's ``hold_out``)
    holds_out_validation = False
    held_out: HeldOut | None = None
    hparams: dict[str, Hparam] = {
        "lr": Hparam(1e-3, log_uniform(1e-4, 1e-2), "learning rate", low=0, low_open=True),
        "weight_decay": Hparam(0.0, log_uniform(1e-6, 1e-2), "L2 penalty (decoupled in adamw)", low=0),
        "batch_size": Hparam(128, choice(64, 128, 256), "examples per step", low=1),
        "optimizer": Hparam("adam", choice("adam"), "adam | adamw | sgd (momentum 0.9)",
                            choices=OPTIMIZERS),
    }

    def __init__(self, backbone: Callable[[], nn.Module], num_classes: int, num_groups: int,
                 hparams: dict[str, Any], train_size: int):
        super().__init__()
        self.hp = dict(hparams)
        self.num_classes = num_classes
        self.num_groups = num_groups
        self.train_size = train_size
        self.build(backbone)
        self.amp = False
        self.grad_sync: Callable[[Any], None] | None = None  # set by a data-parallel run
        self.optimizer = self.make_optimizer(self.parameters())

    @classmethod
    def check_run(cls, hparams: dict[str, Any], steps: int) -> None:
        """Refuse, with a ``HarnessError``, hyperparameters that cannot work in a run of
        ``steps`` steps (called before anything is built or written). Nothing by default."""

    def build(self, backbone: Callable[[], nn.Module]) -> None:
        """Create the trained modules: one backbone and a linear head. Methods that train
        several networks (XRM's twins) override this; the optimizer covers what it creates."""
        self.featurizer = backbone()
        self.classifier = nn.Linear(self.featurizer.n_outputs, self.num_classes)

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        lr, wd, name = self.hp["lr"], self.hp["weight_decay"], self.hp["optimizer"]
        if name == "sgd":
            return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=0.9)
        return (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)(params, lr=lr, weight_decay=wd)

    def sampling(self, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Which training positions to draw from (None: all) and their sampling weights
        (None: uniform without replacement). Called once, before training."""
        return None, None

    def precision(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast when AMP is on (no gradient scaler needed), else a no-op (entering a
        disabled autocast still costs a few percent of a small model's step)."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(next(self.parameters()).device.type, dtype=torch.bfloat16)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with self.precision():
            return self.classifier(self.featurizer(x)).float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.featurizer(x)

    def probe_network(self) -> nn.Module:
        """The network transfer probes read at every named layer (``layer_names``,
        ``intermediates``): the featurizer; methods with a projector return backbone and projector."""
        return self.featurizer

    def before_evaluation(self) -> None:
        """Called by the loop in eval mode, under ``torch.no_grad``, before each evaluation's
        predictions; nothing by default (DFR re-fits its last layer on ``held_out`` here)."""

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_sync is not None:
            self.grad_sync(self.parameters())
        self.optimizer.step()

    def update(self, batch: Batch, step: int) -> dict[str, float]:
        loss = F.cross_entropy(self.predict(batch.x), batch.y)
        self.step(loss)
        return {"loss": loss.detach()}

    def checkpoint_state(self) -> dict[str, Any]:
        return {"model": self.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


class Discoverer(Algorithm):
    """An algorithm that discovers environments: once trained, it splits examples into two
    environments without any annotation (``harness discover`` writes them to its run folder;
    the group source ``inferred:<run folder>`` trains on them).

    Subclasses implement ``environments``; ``discovery_stats`` reports annotation-free numbers
    about the discovery (XRM's final flip rate, by which the best of several is chosen).
    """

    # What a discovery is judged by (a training log such as the flip rate, the final model's
    # environments) reads no evaluated split: by default its run evaluates none
    evaluates: tuple[str, ...] | None = ()

    def environments(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """0/1 per example (1: the minority, "mistake" environment), from inputs and their
        original labels. Called in eval mode, under ``torch.no_grad``."""
        raise NotImplementedError

    def discovery_stats(self) -> dict[str, float]:
        """Numbers about the trained discovery that use no annotation; {} when there are none."""
        return {}
