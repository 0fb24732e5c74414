"""Probing every layer from one forward pass per batch against one forward pass per layer.

The network is the small CNN (16/32/32/32 channels) with a two-layer projector on top (as
self-supervised methods add: Linear-BatchNorm-ReLU, Linear; random init), on colored_digits'
images resized to 28x28 (Fashion-MNIST's size); its layers: block1..block4, backbone (the pooled
output), projector1, output. Both variants encode train, val and test for every layer (the
per-layer variant stops each pass after its layer, as ``intermediates`` does); then the same
probes (logistic regression over the C grid, kNN) are fitted on either's features. Prints the
feature-extraction and end-to-end times and, last, ``ratio: <per-layer / one-pass feature
extraction time>``. Torch and the probes' BLAS run on ``--threads`` threads.

    .venv/bin/python benchmarks/probe_cost.py [--size 28] [--batch-size 256] [--projector-width 128] [--repeats 5]
                                              [--smoke]
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from torch import nn

from _sizing import parse
from harness.data.tasks import fit_inputs, labels, task_dataset
from harness.models.backbones import Backbone, cnn
from harness.models.probes import probe_layer
from harness.runs.features import encode_layers

SMOKE = {"size": 14, "batch_size": 64, "projector_width": 16, "repeats": 1, "examples": 120}  # --smoke: seconds


def cnn_with_projector(input_shape: tuple[int, ...], width: int = 128) -> Backbone:
    """The registered cnn's blocks, then a projector (none for width 0); every block named."""
    torch.manual_seed(0)
    base = cnn(input_shape)
    if width == 0:
        return base.eval()
    blocks = list(base)
    projector = [nn.Sequential(nn.Linear(base.n_outputs, width), nn.BatchNorm1d(width), nn.ReLU()),
                 nn.Linear(width, width)]
    hidden = [*[(n, d) for n, d in base.layer_dims.items() if n != "output"], ("backbone", base.n_outputs),
              ("projector1", width)]
    return Backbone(*blocks, *projector, n_outputs=width, hidden=hidden).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--projector-width", type=int, default=128, help="0: the cnn alone (5 layers)")
    parser.add_argument("--repeats", type=int, default=5, help="feature extraction timed as the best of these")
    parser.add_argument("--examples", type=int, default=0, help="the first N examples of each split (0: all)")
    args = parse(parser, SMOKE)
    dataset, column = task_dataset("digits")
    if args.examples:
        dataset = dataclasses.replace(dataset, splits={name: split.subset(torch.arange(min(args.examples, len(split))))
                                                       for name, split in dataset.splits.items()})
    dataset = fit_inputs(dataset, (2, args.size, args.size))
    net = cnn_with_projector(dataset.input_shape, args.projector_width)
    layers = net.layer_names
    cpu = torch.device("cpu")

    def one_pass() -> dict[str, dict[str, np.ndarray]]:
        by_split = {s: encode_layers(net, split, args.batch_size, cpu, layers) for s, split in dataset.splits.items()}
        return {layer: {s: f[layer] for s, f in by_split.items()} for layer in layers}

    def per_layer() -> dict[str, dict[str, np.ndarray]]:
        return {layer: {s: encode_layers(net, split, args.batch_size, cpu, [layer])[layer]
                        for s, split in dataset.splits.items()} for layer in layers}

    times = {"one pass per batch": float("inf"), "one pass per layer": float("inf")}
    for _ in range(args.repeats):  # interleaved, so that a co-tenant's load falls on both alike
        for name, extract in (("one pass per batch", one_pass), ("one pass per layer", per_layer)):
            start = time.perf_counter()
            feats = extract()
            times[name] = min(times[name], time.perf_counter() - start)
    drift = max(float(np.abs(one_pass()[layer][s] - feats[layer][s]).max()) for layer in layers for s in feats[layer])
    ys = labels(dataset, column)
    start = time.perf_counter()
    for layer in layers:
        probe_layer(feats[layer], ys, k=20)
    fitting = time.perf_counter() - start
    n = sum(len(s) for s in dataset.splits.values())
    projector = f" + projector ({args.projector_width}, {args.projector_width})" if args.projector_width else ""
    print(f"cnn (16/32/32/32){projector}, random init; {len(layers)} layers: {', '.join(layers)}")
    print(f"{n} images 2x{args.size}x{args.size} (colored_digits resized), batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    for name, seconds in times.items():
        print(f"features, {name}: {seconds:7.3f} s   end to end with the probes ({fitting:.2f} s): "
              f"{seconds + fitting:7.2f} s")
    print(f"same features either way: max |difference| = {drift:.1e}")
    one, many = times["one pass per batch"], times["one pass per layer"]
    print(f"end-to-end ratio: {(many + fitting) / (one + fitting):.2f}")
    print(f"ratio: {many / one:.2f}")


if __name__ == "__main__":
    main()
