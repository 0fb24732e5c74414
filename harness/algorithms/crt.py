"""Classifier re-training (Kang et al., ICLR 2020, "Decoupling representation and classifier
for long-tailed recognition"), with class-balanced resampling (CRT) or reweighting
(ReWeight-CRT) in its second stage, as SubpopBench runs them.

Both stages run inside one run: the first ``erm_steps`` steps train backbone and head with ERM;
at step ``erm_steps`` the head is re-initialised, and the remaining steps train only the head,
with its own optimizer, on the frozen backbone's features (backbone in eval mode, so BatchNorm
statistics stay frozen too). Evaluations during the second stage describe the re-trained head.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from harness.core.errors import HarnessError
from harness.core.registry import ALGORITHMS, Hparam, choice
from harness.models.algorithm import Batch
from harness.models.shared import CountsClasses


class ClassifierRetraining(CountsClasses):
    """ERM for erm_steps, then a re-initialised head trained alone (``head_loss``)."""

    # SubpopBench trains the second stage from a separate ERM run and tunes no split; the choices
    # mirror jtt's id_steps.
    hparams = {"erm_steps": Hparam(500, choice(100, 250, 500, 1000), "steps of the first (ERM) stage", low=1)}

    @classmethod
    def check_run(cls, hparams: dict[str, Any], steps: int) -> None:
        if hparams["erm_steps"] >= steps:
            raise HarnessError(f"erm_steps ({hparams['erm_steps']}) must be below steps ({steps}), or the head is "
                               "never re-trained; accepted: algorithm.hparams.erm_steps < steps")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.head_optimizer = self.make_optimizer(self.classifier.parameters())

    def head_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def stage_examples(self, y: torch.Tensor, first_stage: bool) -> torch.Tensor:
        """Which of the batch's examples the current stage trains on (all, by default)."""
        return torch.ones_like(y, dtype=torch.bool)

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        first_stage = step < self.hp["erm_steps"]
        if step == self.hp["erm_steps"]:
            self.classifier.reset_parameters()
        keep = self.stage_examples(batch.y, first_stage)
        if not keep.any():
            return {}
        x, y = batch.x[keep], batch.y[keep]
        if first_stage:
            loss = F.cross_entropy(self.predict(x), y)
            self.step(loss)
            return {"loss": loss.detach()}
        self.featurizer.eval()
        with torch.no_grad(), self.precision():
            features = self.featurizer(x)
        with self.precision():
            logits = self.classifier(features).float()
        loss = self.head_loss(logits, y)
        self.head_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.head_optimizer.step()
        return {"loss": loss.detach()}

    def checkpoint_state(self) -> dict[str, Any]:
        return {**super().checkpoint_state(), "head_optimizer": self.head_optimizer.state_dict()}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        super().load_checkpoint_state(state)
        self.head_optimizer.load_state_dict(state["head_optimizer"])


@ALGORITHMS.register("crt")
class CRT(ClassifierRetraining):
    """CRT: ERM, then the head re-initialised and re-trained alone on class-balanced draws.

    The loop fixes one sampling distribution for the whole run, so examples are drawn from the
    even mixture of the uniform distribution u and the class-balanced one b, and each drawn
    example goes to the first stage with probability u / (u + b), to the second otherwise: each
    stage then sees exact draws from its own distribution, about half a batch per step.
    """

    def sampling(self, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        super().sampling(y, g)
        uniform = torch.full((len(y),), 1.0 / len(y), dtype=torch.double)
        return None, (uniform + self.balanced_mass(y).double().cpu()) / 2

    def balanced_mass(self, y: torch.Tensor) -> torch.Tensor:
        """b per example, 1 / (C' n_y): the class-balanced distribution over training examples."""
        return self.inverse_frequency()[y.to(self.class_counts.device)] / self.class_counts.sum()

    def stage_examples(self, y: torch.Tensor, first_stage: bool) -> torch.Tensor:
        uniform = 1.0 / self.class_counts.sum()
        to_first = torch.rand(len(y), device=y.device) < uniform / (uniform + self.balanced_mass(y))
        return to_first if first_stage else ~to_first

    def head_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)


@ALGORITHMS.register("reweight_crt")
class ReWeightCRT(ClassifierRetraining):
    """ReWeight-CRT: ERM, then the head re-trained alone with inverse-class-frequency weights.

    The second stage draws uniformly and weighs each example's loss by N / (C' n_y), the inverse
    frequency of its class (1 on average over the training split)."""

    def head_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.inverse_frequency()[y] * F.cross_entropy(logits, y, reduction="none")).mean()
