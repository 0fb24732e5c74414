"""A representation-conditioned diffusion model (RCDM, Bordes, Balestriero and Vincent, 2022)
built from ``diffusers``: a ``UNet2DModel`` whose timestep embedding gets a learned linear map
of a frozen network's representation added to it (``class_embed_type="identity"``: the map's
output is the class embedding), which every residual block turns into a per-channel scale and
shift after its group normalisation (``resnet_time_scale_shift="scale_shift"``). The DDPM
training loss noises images with ``DDPMScheduler.add_noise``; sampling steps ``DDIMScheduler``.
Nothing of the diffusion arithmetic is written here; models are built from a config, never
downloaded.

Images are in [-1, 1]; representations are standardised by the caller. A zero representation
stands for "no conditioning": training with ``drop`` > 0 replaces that fraction of a batch's
representations by zeros, so that the same model samples unconditionally (the baseline that
tells what a sample owes to its conditioning).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.errors import HarnessError


def check_image_size(size: int, channels: Sequence[int]) -> None:
    """A HarnessError unless the UNet's ``len(channels) - 1`` halvings of ``size`` are exact
    (the upsampling path must meet each skip connection's size)."""
    halvings = len(channels) - 1
    if size < 2 ** halvings or size % 2 ** halvings:
        raise HarnessError(f"a UNet of {len(channels)} levels (channels {list(channels)}) halves the image "
                           f"{halvings} times; image size {size} is not divisible by {2 ** halvings}: use a "
                           f"multiple of {2 ** halvings} (e.g. 16), or fewer levels")


class RCDM(nn.Module):
    """The conditional UNet and the map of the representation into its timestep embedding.
    ``channels``: each level's width (the first is the base width); ``groups``: group-norm groups."""

    def __init__(self, rep_dim: int, image_shape: Sequence[int], channels: Sequence[int], layers_per_block: int = 1,
                 groups: int = 8, train_timesteps: int = 1000):
        super().__init__()
        from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

        c, h, w = image_shape
        if h != w:
            raise HarnessError(f"the UNet reads square images; got {h}×{w}")
        check_image_size(h, channels)
        if any(ch % groups for ch in channels):
            raise HarnessError(f"UNet channels {list(channels)} must be multiples of the {groups} norm groups")
        levels = len(channels)
        self.unet = UNet2DModel(
            sample_size=h, in_channels=c, out_channels=c, block_out_channels=tuple(channels),
            layers_per_block=layers_per_block, down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels, norm_num_groups=groups,
            class_embed_type="identity", resnet_time_scale_shift="scale_shift")
        self.embed_dim = self.unet.time_embedding.linear_2.out_features
        self.condition = nn.Linear(rep_dim, self.embed_dim)
        self.rep_dim = rep_dim
        self.train_scheduler = DDPMScheduler(num_train_timesteps=train_timesteps)
        self.sample_scheduler = DDIMScheduler(num_train_timesteps=train_timesteps)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, rep: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction, conditioned on ``rep`` (N × rep_dim)."""
        return self.unet(noisy, timesteps, class_labels=self.condition(rep)).sample

    def loss(self, images: torch.Tensor, rep: torch.Tensor, generator: torch.Generator, drop: float = 0.0
             ) -> torch.Tensor:
        """The DDPM loss (noise prediction, mean squared error) of one batch; the timesteps, the
        noise and which representations are dropped (``drop``: zeroed) come from ``generator``."""
        n = len(images)
        timesteps = torch.randint(0, self.train_scheduler.config.num_train_timesteps, (n,), generator=generator)
        noise = torch.randn(images.shape, generator=generator)
        if drop > 0:
            kept = torch.rand(n, generator=generator) >= drop
            rep = rep * kept[:, None].to(rep.dtype)
        device = images.device
        noisy = self.train_scheduler.add_noise(images, noise.to(device), timesteps.to(device))
        return F.mse_loss(self(noisy, timesteps.to(device), rep), noise.to(device))

    @torch.no_grad()
    def sample(self, rep: torch.Tensor, steps: int, generator: torch.Generator, shape: Sequence[int]) -> torch.Tensor:
        """Images (N × C × H × W, in [-1, 1]) by ``steps`` DDIM steps (eta 0: deterministic given
        the starting noise, drawn from ``generator``), each conditioned on its row of ``rep``."""
        if steps <= 0:
            raise HarnessError(f"sampling steps must be a positive integer, got {steps}")
        device = rep.device
        scheduler = self.sample_scheduler
        scheduler.set_timesteps(steps)
        x = torch.randn((len(rep), *shape), generator=generator).to(device)
        embedding = self.condition(rep)
        for t in scheduler.timesteps:
            eps = self.unet(x, t.to(device), class_labels=embedding).sample
            x = scheduler.step(eps, t, x).prev_sample
        return x.clamp(-1, 1)
