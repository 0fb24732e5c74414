"""I-JEPA (Assran et al., 2023) and its stochastic positions, StoP (Bar et al., 2024).

The context encoder (the backbone, what probes read) sees one context block of patches; a
narrow predictor, fed its tokens and mask tokens at the positions of ``num_targets`` target
blocks, predicts the target encoder's layer-normed outputs there (smooth L1). The target encoder
starts as a copy of the context encoder and follows it by an exponential moving average whose
momentum rises linearly from ``ema_start`` to ``ema_end`` over ``ema_steps`` steps (the step is
the loop's, so a resumed run continues the schedule; set ``ema_steps`` to the run's steps for the
paper's schedule over the whole run). Both encoders and the predictor are the algorithm's
modules, so the checkpoint holds them.

StoP (``stop_sigma`` > 0): in training, each mask token's position ψ becomes ψ + A·n with
n ~ N(0, σ²I) in the encoder's width and A the weight of the predictor's input map, the one the
context tokens go through; context tokens and evaluation see no noise.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from harness.core.errors import HarnessError
from harness.core.registry import ALGORITHMS, Hparam, choice, fixed
from harness.models.algorithm import Batch
from harness.models.masking import MaskedPretrainer, check_mixer, MultiBlockMasks, TokenMixer, gather_tokens

SCALE = {"low": 0, "low_open": True, "high": 1}
ASPECT = {"low": 0, "low_open": True}


def check_range(name: str, bounds: Any) -> None:
    """A (low, high) pair with low <= high."""
    if len(bounds) != 2 or bounds[0] > bounds[1]:
        raise HarnessError(f"algorithm hparam {name} must be [low, high] with low <= high, got {list(bounds)}")


def ema_(target: list[torch.Tensor], online: list[torch.Tensor], momentum: float) -> None:
    """target ← momentum · target + (1 − momentum) · online, in place."""
    torch._foreach_mul_(target, momentum)
    torch._foreach_add_(target, online, alpha=1 - momentum)


class Predictor(TokenMixer):
    """I-JEPA's predictor: context tokens and one set of mask tokens per target block, run as
    separate sequences (the context repeated), back to the encoder's width."""

    def __init__(self, grid, width: int, predictor_width: int, depth: int, heads: int, stop_sigma: float):
        super().__init__(grid, width, predictor_width, depth, heads, width)
        self.stop_sigma = stop_sigma

    def inputs(self, z: torch.Tensor, context: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(targets × N, k + h·w, predictor width) sequences: the context tokens, then a target
        block's mask tokens (StoP: their positions noised, in training only)."""
        masks = self.masked(targets)
        if self.training and self.stop_sigma > 0:
            # drawn on the CPU, whose RNG state the run checkpoint holds
            noise = torch.randn(*targets.shape, self.embed.in_features).to(z.device) * self.stop_sigma
            masks = masks + F.linear(noise, self.embed.weight)
        known = self.known(z, context).repeat(len(targets), 1, 1)
        return torch.cat([known, masks.flatten(0, 1)], 1)

    def forward(self, z: torch.Tensor, context: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Predicted target tokens, (targets × N, h·w, encoder width)."""
        return self.mix(self.inputs(z, context, targets), targets.shape[-1])


@ALGORITHMS.register("ijepa")
class IJEPA(MaskedPretrainer):
    """I-JEPA: predict an EMA target encoder's patch outputs at target blocks from one context block (StoP: stop_sigma)."""

    hparams = {
        **MaskedPretrainer.hparams,
        "num_targets": Hparam(4, fixed(4), "target blocks per image", low=1),
        "target_scale": Hparam((0.15, 0.2), fixed((0.15, 0.2)), "[low, high] share of the patches per target block",
                               **SCALE),
        "target_aspect": Hparam((0.75, 1.5), fixed((0.75, 1.5)), "[low, high] height/width of a target block", **ASPECT),
        "context_scale": Hparam((0.85, 1.0), fixed((0.85, 1.0)), "[low, high] share of the patches of the context "
                                "block (before the targets are removed)", **SCALE),
        "context_aspect": Hparam((1.0, 1.0), fixed((1.0, 1.0)), "[low, high] height/width of the context block",
                                 **ASPECT),
        "min_keep": Hparam(4, fixed(4), "fewest context patches kept (an example with fewer is redrawn)", low=1),
        "predictor_width": Hparam(32, choice(32, 64), "predictor token width (a multiple of 4)", low=1),
        "predictor_depth": Hparam(2, choice(1, 2, 4), "predictor blocks", low=1),
        "predictor_heads": Hparam(4, fixed(4), "predictor attention heads (divide its width)", low=1),
        "ema_start": Hparam(0.996, choice(0.996, 0.97), "EMA momentum at step 0", low=0, high=1),
        "ema_end": Hparam(1.0, choice(1.0, 0.999), "EMA momentum from ema_steps on", low=0, high=1),
        "ema_steps": Hparam(1000, fixed(1000), "steps over which the momentum rises linearly (the run's steps: the "
                            "paper's schedule)", low=0),
        "stop_sigma": Hparam(0.0, fixed(0.0), "StoP: std of the noise on mask tokens' positions (0: off; paper 0.25)",
                             low=0),
    }

    @classmethod
    def check_run(cls, hparams: dict[str, Any], steps: int) -> None:
        for name in ("target_scale", "target_aspect", "context_scale", "context_aspect"):
            check_range(name, hparams[name])
        check_mixer(hparams, "predictor")

    def build_method(self) -> None:
        hp = self.hp
        self.masks = MultiBlockMasks(self.grid, hp["num_targets"], hp["target_scale"], hp["target_aspect"],
                                     hp["context_scale"], hp["context_aspect"], hp["min_keep"])
        self.target_encoder = copy.deepcopy(self.featurizer).requires_grad_(False)
        self.predictor = Predictor(self.grid, self.featurizer.embed_dim, hp["predictor_width"], hp["predictor_depth"],
                                   hp["predictor_heads"], hp["stop_sigma"])

    def momentum(self, step: int) -> float:
        start, end, steps = self.hp["ema_start"], self.hp["ema_end"], self.hp["ema_steps"]
        return end if step >= steps else start + (end - start) * step / steps

    def loss(self, x: torch.Tensor, context: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Smooth L1 between the predictions at ``targets`` (T, N, h·w) from the context
        (N, k) and the target encoder's layer-normed outputs there."""
        with torch.no_grad():
            h = self.target_encoder.tokens(x)
            h = F.layer_norm(h, h.shape[-1:])
            wanted = torch.cat([gather_tokens(h, t) for t in targets])
        z = self.featurizer.tokens(x, context)
        return F.smooth_l1_loss(self.predictor(z, context, targets), wanted)

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        context, targets = self.masks(len(batch.x))
        device = batch.x.device
        with self.precision():
            loss = self.loss(batch.x, context.to(device), targets.to(device))
        probe_loss = self.probe_loss(batch.x, batch.y)
        self.step(loss.float() + probe_loss)
        with torch.no_grad():
            ema_(list(self.target_encoder.parameters()), list(self.featurizer.parameters()), self.momentum(step))
        return {"loss": loss.detach(), "probe_loss": probe_loss.detach()}
