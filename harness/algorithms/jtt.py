"""Just Train Twice (Liu et al., ICML 2021) and its error set as a discovery method.

JTT trains an *identification* model with ERM for T steps; the training examples it gets wrong
form the error set, which a second, fresh model then trains on with extra weight.

- ``jtt_errors`` is the error set as a discovery method: ERM for the run's ``steps`` (= T);
  environment 1 is the examples the identification model misclassifies. Unlike XRM it has no
  annotation-free criterion to choose T or its other hyperparameters.
- ``jtt`` is the whole method for the worst-group board: the first ``id_steps`` steps train the
  identification model, the remaining ``steps - id_steps`` a fresh model whose loss weighs every
  error-set example ``lambda_up`` times as much as the others.

Liu et al. upsample the error set; here the batch loss is ``sum(w_i * loss_i) / sum(w_i)`` with
``w_i = lambda_up`` for error-set examples and 1 otherwise, which has the upsampled data's
expected gradient. A loss weight is needed because the loop fixes its sampling before training,
when the error set is not yet known. An example's error flag is computed (in eval mode) the first
time it is drawn after T and kept in a buffer, so the error set is fixed and checkpointed.
Evaluations during the first T steps describe the second model before its training starts.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.errors import HarnessError
from harness.core.registry import ALGORITHMS, Hparam, choice
from harness.models.algorithm import Algorithm, Batch, Discoverer


@ALGORITHMS.register("jtt_errors")
class ErrorSet(Discoverer):
    """JTT's error set: ERM for the run's steps (T); its training errors form environment 1."""

    def environments(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.predict(x).argmax(1) != y).long()


@ALGORITHMS.register("jtt")
class JTT(Algorithm):
    """JTT: ERM for id_steps, then a fresh model with the error set's loss weighted lambda_up."""

    hparams = {
        "id_steps": Hparam(500, choice(100, 250, 500, 1000), "T: steps of the identification model", low=1),
        "lambda_up": Hparam(20.0, choice(5.0, 10.0, 20.0, 50.0, 100.0), "weight of error-set examples", low=0, low_open=True),
    }

    @classmethod
    def check_run(cls, hparams: dict[str, Any], steps: int) -> None:
        if hparams["id_steps"] >= steps:
            raise HarnessError(f"jtt's id_steps ({hparams['id_steps']}) must be below steps ({steps}), or its final "
                               "model never trains; accepted: algorithm.hparams.id_steps < steps")

    def __init__(self, backbone: Callable[[], nn.Module], num_classes: int, num_groups: int,
                 hparams: dict[str, Any], train_size: int):
        super().__init__(backbone, num_classes, num_groups, hparams, train_size)
        features = backbone()
        self.identifier = nn.Sequential(features, nn.Linear(features.n_outputs, num_classes))
        self.id_optimizer = self.make_optimizer(self.identifier.parameters())
        # 1: in the error set, 0: not, -1: not drawn since the identification model finished
        self.register_buffer("error", torch.full((train_size,), -1, dtype=torch.long))

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        if step < self.hp["id_steps"]:
            with self.precision():
                loss = F.cross_entropy(self.identifier(batch.x).float(), batch.y)
            self.id_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.id_optimizer.step()
            return {"loss": loss.detach()}
        weights = 1.0 + (self.hp["lambda_up"] - 1.0) * self.error_flags(batch).float()
        losses = F.cross_entropy(self.predict(batch.x), batch.y, reduction="none")
        loss = (weights * losses).sum() / weights.sum()
        self.step(loss)
        return {"loss": loss.detach()}

    @torch.no_grad()
    def error_flags(self, batch: Batch) -> torch.Tensor:
        """Whether the identification model misclassifies each example (cached per example)."""
        unknown = self.error[batch.index] < 0
        if unknown.any():
            self.identifier.eval()
            with self.precision():
                wrong = self.identifier(batch.x[unknown]).float().argmax(1) != batch.y[unknown]
            self.error[batch.index[unknown]] = wrong.long()
        return self.error[batch.index]

    def checkpoint_state(self) -> dict[str, Any]:
        return {**super().checkpoint_state(), "id_optimizer": self.id_optimizer.state_dict()}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        super().load_checkpoint_state(state)
        self.id_optimizer.load_state_dict(state["id_optimizer"])
