"""How much faster a linear head trains on cached frozen features than when every step encodes
its batch with the frozen backbone (timm resnet18, random init, images made on the fly).

Both variants run the same steps on the same batches with the same head and optimiser, on the
CPU with ``--threads`` torch threads; the cached variant's time includes encoding the whole
dataset once into an empty cache. Prints both times, the cache's bytes per example, and last
``ratio: <encode-every-step time / cached time>``.

    .venv/bin/python benchmarks/feature_cache.py [--steps 150] [--image-size 64] [--examples 512] [--smoke]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from typing import Callable

import torch
from torch import nn

from _sizing import parse
from harness.data.dataset import Column, Schema, ShiftDataset, Split, batch_indices
from harness.runs import features

BACKBONE = "timm:resnet18"
SMOKE = {"steps": 3, "batch_size": 8, "image_size": 32, "examples": 16}  # --smoke: seconds, the same path


def make_dataset(n: int, size: int, seed: int = 0) -> ShiftDataset:
    """Random images with a random binary label and an attribute equal to it."""
    gen = torch.Generator().manual_seed(seed)
    schema = Schema((Column("y", "label", 2), Column("attribute", "attribute", 2, ("a", "b"))), attribute="attribute")
    sizes = {"train": n, "val": 16, "test": 16}
    splits, start = {}, 0
    for name, m in sizes.items():
        y = torch.randint(0, 2, (m,), generator=gen)
        splits[name] = Split.of(torch.rand(m, 3, size, size, generator=gen), torch.arange(start, start + m), schema,
                                {"y": y, "attribute": y})
        start += m
    return ShiftDataset(splits, input_shape=(3, size, size), info={"name": "benchmark_images"})


def train_head(inputs: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, dim: int, steps: int,
               batch_size: int) -> nn.Linear:
    """Train a linear head for ``steps`` steps on ``inputs(batch positions)``."""
    torch.manual_seed(0)
    head = nn.Linear(dim, 2)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    for step in range(steps):
        idx = batch_indices(len(y), batch_size, step, seed=0)
        loss = nn.functional.cross_entropy(head(inputs(idx)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--examples", type=int, default=512)
    args = parse(parser, SMOKE)
    dataset = make_dataset(args.examples, args.image_size)
    train = dataset.splits["train"]
    spec = {"backbone": BACKBONE, "batch_size": args.batch_size, "device": "cpu"}
    net = features.frozen_backbone(BACKBONE, dataset.input_shape, {"pretrained": False}, seed=0)

    @torch.no_grad()
    def encoded_each_step(idx: torch.Tensor) -> torch.Tensor:
        return net(train.x[idx])

    start = time.perf_counter()
    head_a = train_head(encoded_each_step, train.y, net.n_outputs, args.steps, args.batch_size)
    every_step = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        cached = features.apply(spec, dataset, cache)
        feats = cached.splits["train"].x
        head_b = train_head(lambda idx: feats[idx], train.y, feats.shape[1], args.steps, args.batch_size)
        with_cache = time.perf_counter() - start
        start = time.perf_counter()
        features.apply(spec, dataset, cache)
        reload = time.perf_counter() - start
        size = features.cache_files(cached)["train"].stat().st_size

    drift = max((a - b).abs().max().item() for a, b in zip(head_a.parameters(), head_b.parameters()))
    print(f"{BACKBONE} (random init), {args.examples} images {args.image_size}x{args.image_size}, "
          f"{args.steps} steps of batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"encode every step:          {every_step:8.2f} s")
    print(f"encode once + cached steps: {with_cache:8.2f} s  (a later run finds the cache: {reload:.2f} s to load)")
    print(f"same head either way: max |weight difference| = {drift:.1e}")
    print(f"cache: {feats.shape[1]} float32 features, {size / args.examples:.0f} bytes per example")
    print(f"ratio: {every_step / with_cache:.1f}")


if __name__ == "__main__":
    main()
