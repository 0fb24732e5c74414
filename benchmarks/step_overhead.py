"""Training throughput of the harness's loop over a hand-written PyTorch loop.

Same model (the default MLP), data (colored_digits, held in memory), optimizer and batch size;
the two are run alternately, several rounds, in one process, and the medians compared. The
harness side is timed from its own per-evaluation ``train_seconds`` (evaluation excluded, as the
hand-written loop does none). Last line: ``ratio: <harness examples/s over hand-written>``.

    python benchmarks/step_overhead.py [--steps 1500] [--rounds 5] [--smoke]
"""
from __future__ import annotations

import time

import side_by_side
import torch
import torch.nn.functional as F

from harness.core.registry import DATASETS
from harness.models.backbones import mlp


def hand_written(steps: int, batch_size: int) -> float:
    """Examples per second of the plainest loop: permutation per epoch, index, step."""
    ds = DATASETS.get("colored_digits").obj()
    x, y = ds.splits["train"].x, ds.splits["train"].y
    torch.manual_seed(0)
    model = torch.nn.Sequential(mlp(ds.input_shape), torch.nn.Linear(390, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    per_epoch = len(x) // batch_size
    start = time.perf_counter()
    for step in range(steps):
        if step % per_epoch == 0:
            perm = torch.randperm(len(x))
        idx = perm[(step % per_epoch) * batch_size:(step % per_epoch + 1) * batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - start)


def harness_loop(steps: int, batch_size: int, folder: str) -> float:
    return side_by_side.harness_rate(folder, steps, batch_size)


if __name__ == "__main__":
    side_by_side.main(__doc__, harness_loop, hand_written, steps=1500, batch_size=128, warmup=50)
