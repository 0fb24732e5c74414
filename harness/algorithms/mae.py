"""MAE (He et al., 2022): masked autoencoding of pixels.

A random ``mask_ratio`` of each image's patches is hidden; the encoder (the backbone, what
probes read) sees the visible ones only; a light decoder over their tokens and mask tokens (fixed
sin-cos positions) predicts the hidden patches' pixels, normalised per patch by their mean and
variance (``norm_pix``); the loss is the squared error on the hidden patches alone.
"""
from __future__ import annotations

from typing import Any

import torch

from harness.core.errors import HarnessError
from harness.core.registry import ALGORITHMS, Hparam, choice, fixed
from harness.models.algorithm import Batch
from harness.models.masking import MaskedPretrainer, check_mixer, TokenMixer, gather_tokens, patchify, random_masks


def masked_pixel_loss(predicted: torch.Tensor, patches: torch.Tensor, hidden: torch.Tensor,
                      norm_pix: bool) -> torch.Tensor:
    """Mean squared error between ``predicted`` (N, h, pixels) and the pixels of the patches at
    ``hidden`` (N, h) of ``patches`` (N, L, pixels), each normalised by its own mean and variance
    when ``norm_pix``: the other patches do not enter."""
    target = gather_tokens(patches, hidden)
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    return (predicted - target).pow(2).mean()


@ALGORITHMS.register("mae")
class MAE(MaskedPretrainer):
    """MAE: reconstruct the normalised pixels of randomly hidden patches from the visible ones."""

    hparams = {
        **MaskedPretrainer.hparams,
        "mask_ratio": Hparam(0.75, fixed(0.75), "share of each image's patches hidden", low=0, high=1,
                             low_open=True, high_open=True),
        "decoder_width": Hparam(32, choice(32, 64), "decoder token width (a multiple of 4)", low=1),
        "decoder_depth": Hparam(1, choice(1, 2), "decoder blocks", low=1),
        "decoder_heads": Hparam(4, fixed(4), "decoder attention heads (divide its width)", low=1),
        "norm_pix": Hparam(True, fixed(True), "targets normalised per patch (mean 0, variance 1)"),
    }

    @classmethod
    def check_run(cls, hparams: dict[str, Any], steps: int) -> None:
        check_mixer(hparams, "decoder")

    def build_method(self) -> None:
        patches = self.grid[0] * self.grid[1]
        self.visible = round(patches * (1 - self.hp["mask_ratio"]))
        if not 0 < self.visible < patches:
            raise HarnessError(f"algorithm hparam mask_ratio: {self.hp['mask_ratio']} leaves {self.visible} of the "
                               f"{patches} patches visible; accepted: a ratio that hides some and shows some")
        self.patch = self.featurizer.patch_embed.patch_size[0]
        pixels = self.patch * self.patch * self.input_shape[0]
        self.decoder = TokenMixer(self.grid, self.featurizer.embed_dim, self.hp["decoder_width"],
                                  self.hp["decoder_depth"], self.hp["decoder_heads"], pixels)

    def loss(self, x: torch.Tensor, visible: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        z = self.featurizer.tokens(x, visible)
        tokens = torch.cat([self.decoder.known(z, visible), self.decoder.masked(hidden)], 1)
        predicted = self.decoder.mix(tokens, hidden.shape[1])
        return masked_pixel_loss(predicted.float(), patchify(x.float(), self.patch), hidden, self.hp["norm_pix"])

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        patches = self.grid[0] * self.grid[1]
        visible, hidden = (m.to(batch.x.device) for m in random_masks(len(batch.x), patches, self.visible))
        with self.precision():
            loss = self.loss(batch.x, visible, hidden)
        probe_loss = self.probe_loss(batch.x, batch.y)
        self.step(loss + probe_loss)
        return {"loss": loss.detach(), "probe_loss": probe_loss.detach()}
