"""The visualize trial's training step (harness.runs.visualize.fit on harness.models.rcdm.RCDM)
against a hand-written loop on the same diffusers model, side by side; and DDIM sampling
throughput.

Same UNet (UNet2DModel, 16×16 RGB, channels [32, 64], one residual block per level, class
embedding "identity" fed a Linear map of a 32-d representation, scale-shift norm), the same DDPM
noising (DDPMScheduler.add_noise, 1000 timesteps), Adam, batch size and random in-memory data.
The hand-written side builds the model from diffusers directly and writes its loop inline (no
representation dropping, no checkpoint). The harness side is timed around ``fit``, which also
writes its final checkpoint. Both alternate over several rounds in one process; medians
compared. Then: images per second of DDIM sampling in 20 steps. Last line: ``ratio: <harness
ex/s over hand-written>`` (target ≥ 0.95).

    python benchmarks/visualize_cost.py [--steps 60] [--rounds 5] [--smoke]
"""
from __future__ import annotations

import time
from pathlib import Path

import side_by_side
import torch
import torch.nn.functional as F

from harness.models.rcdm import RCDM
from harness.runs.visualize import fit

SHAPE, CHANNELS, REP_DIM, N = (3, 16, 16), [32, 64], 32, 512
SAMPLING_STEPS, SAMPLING_BATCH = 20, 32


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand((N, *SHAPE), generator=g) * 2 - 1, torch.randn((N, REP_DIM), generator=g)


def hand_written(steps: int, batch_size: int) -> float:
    from diffusers import DDPMScheduler, UNet2DModel

    images, reps = data()
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=tuple(CHANNELS),
                       layers_per_block=1, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       norm_num_groups=8, class_embed_type="identity", resnet_time_scale_shift="scale_shift")
    condition = torch.nn.Linear(REP_DIM, unet.time_embedding.linear_2.out_features)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.Adam([*unet.parameters(), *condition.parameters()], lr=1e-3)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, N, (batch_size,))
        t = torch.randint(0, 1000, (batch_size,))
        noise = torch.randn(batch_size, *SHAPE)
        prediction = unet(scheduler.add_noise(images[idx], noise, t), t, class_labels=condition(reps[idx])).sample
        loss = F.mse_loss(prediction, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - start)


def harness_loop(steps: int, batch_size: int, folder: str) -> float:
    images, reps = data()
    torch.manual_seed(0)
    model = RCDM(REP_DIM, SHAPE, CHANNELS)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    spec = {"steps": steps, "batch_size": batch_size, "drop": 0.2, "checkpoint_every": steps}
    Path(folder).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    fit(model, opt, images, reps, spec, Path(folder) / "checkpoint.pt", seed=0)
    return steps * batch_size / (time.perf_counter() - start)


def sampling() -> None:
    batch = SAMPLING_BATCH
    torch.manual_seed(0)
    model = RCDM(REP_DIM, SHAPE, CHANNELS).eval()
    reps = torch.randn(batch, REP_DIM)
    start = time.perf_counter()
    model.sample(reps, SAMPLING_STEPS, torch.Generator().manual_seed(0), SHAPE)
    print(f"sampling: {batch / (time.perf_counter() - start):,.1f} images/s (DDIM, {SAMPLING_STEPS} steps, "
          f"batch {batch})")


if __name__ == "__main__":
    side_by_side.main(__doc__, harness_loop, hand_written, steps=60, batch_size=64, warmup=5, report=sampling)
