"""A SimCLR step through the harness against a hand-written loop, side by side.

Same network (the default MLP, a 2-layer projector of width 128 with BatchNorm, an online
linear probe on the detached backbone output), data (colored_digits in memory), views (Gaussian
noise, std 0.1), NT-Xent at temperature 0.2, Adam and batch size. The hand-written side writes
its loss inline (not through harness.models.ssl_losses). The two alternate, several rounds, in
one process; medians compared. The harness side is timed from its per-evaluation
``train_seconds`` (evaluation excluded). Last line: ``ratio: <harness ex/s over hand-written>``
(target ≥ 0.95).

    python benchmarks/ssl_step_overhead.py [--steps 600] [--rounds 5] [--smoke]
"""
from __future__ import annotations

import time

import side_by_side
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.registry import DATASETS
from harness.models.backbones import mlp

TEMPERATURE, NOISE, WIDTH = 0.2, 0.1, 128


def nt_xent(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    sim = (z @ z.T / TEMPERATURE).fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, target)


def hand_written(steps: int, batch_size: int) -> float:
    ds = DATASETS.get("colored_digits").obj()
    x, y = ds.splits["train"].x, ds.splits["train"].y
    torch.manual_seed(0)
    backbone = mlp(ds.input_shape)
    head = nn.Sequential(nn.Sequential(nn.Linear(390, WIDTH, bias=False), nn.BatchNorm1d(WIDTH), nn.ReLU()),
                         nn.Linear(WIDTH, WIDTH))
    online = nn.Linear(390, ds.num_classes)
    opt = torch.optim.Adam([*backbone.parameters(), *head.parameters(), *online.parameters()], lr=1e-3)
    per_epoch = len(x) // batch_size
    start = time.perf_counter()
    for step in range(steps):
        if step % per_epoch == 0:
            perm = torch.randperm(len(x))
        idx = perm[(step % per_epoch) * batch_size:(step % per_epoch + 1) * batch_size]
        xb, yb = x[idx], y[idx]
        views = torch.cat([xb + NOISE * torch.randn_like(xb), xb + NOISE * torch.randn_like(xb)])
        h = backbone(views)
        z = head(h)
        loss = nt_xent(z[:batch_size], z[batch_size:]) + F.cross_entropy(online(h[:batch_size].detach()), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - start)


def harness_loop(steps: int, batch_size: int, folder: str) -> float:
    return side_by_side.harness_rate(folder, steps, batch_size, "algorithm.name=simclr",
                                     f"algorithm.hparams.noise_std={NOISE}", f"algorithm.hparams.temperature={TEMPERATURE}",
                                     "algorithm.hparams.projector_depth=2", f"algorithm.hparams.projector_width={WIDTH}")


if __name__ == "__main__":
    side_by_side.main(__doc__, harness_loop, hand_written, steps=600, batch_size=256, warmup=30)
