"""Probing every layer, end to end: the harness's way (one forward pass per batch for all layers,
every C of the grid fitted at once) against the plain loop (one forward pass per layer, then per
layer one scikit-learn ``LogisticRegression`` per C, as the probe was fitted before).

The network is the small CNN (16/32/32/32 channels) with a two-layer projector on top (as
self-supervised methods add: Linear-BatchNorm-ReLU, Linear; random init), on colored_digits'
images resized to 28x28 (Fashion-MNIST's size); its layers: block1..block4, backbone (the pooled
output), projector1, output. Both variants encode train, val and test for every layer (the
per-layer variant stops each pass after its layer, as ``intermediates`` does), then fit the
linear probe over the default C grid (C chosen on validation), the kNN and the spectrum. Prints
the feature-extraction, fitting and end-to-end times, how often both chose the same C and the
largest difference of their test accuracies, and, last, ``ratio: <plain loop / harness, end to
end>``. Torch and the probes' BLAS run on ``--threads`` threads.

    .venv/bin/python benchmarks/probe_cost.py [--size 28] [--batch-size 256] [--projector-width 128] [--repeats 5]
                                              [--fit-repeats 2] [--smoke]
"""
from __future__ import annotations

import argparse
import dataclasses
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier  # noqa: F401 (imported before anything is timed: kNN's)
from sklearn.preprocessing import StandardScaler
from torch import nn

from _sizing import parse
from harness.data.tasks import fit_inputs, labels, task_dataset
from harness.models.backbones import Backbone, cnn
from harness.models.probes import DEFAULT_CS, choose_c, knn_predict, probe_layer
from harness.models.representation import spectrum
from harness.runs.features import encode_layers

SMOKE = {"size": 14, "batch_size": 64, "projector_width": 16, "repeats": 1, "fit_repeats": 1, "examples": 120}  # --smoke: seconds


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


def probe_layer_per_c(features: dict[str, np.ndarray], ys: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """The plain loop's probes of one layer: standardisation, one lbfgs fit per C, C chosen on
    validation; the same kNN and spectra as ``probe_layer``."""
    scaler = StandardScaler().fit(features["train"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        models = [LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(features["train"]), ys["train"])
                  for c in DEFAULT_CS]
    by_c = np.stack([m.predict(scaler.transform(features["val"])) for m in models])
    chosen = choose_c(by_c, ys["val"])
    out = {"cs": np.asarray(DEFAULT_CS), "val.probe_by_c": by_c}
    for split, x in features.items():
        out[f"{split}.probe"] = models[chosen].predict(scaler.transform(x))
        if split != "train":
            out[f"{split}.knn"] = knn_predict(features["train"], ys["train"], x, k)
        out[f"{split}.spectrum"] = spectrum(x)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--projector-width", type=int, default=128, help="0: the cnn alone (5 layers)")
    parser.add_argument("--repeats", type=int, default=5, help="feature extraction timed as the best of these")
    parser.add_argument("--fit-repeats", type=int, default=2, help="the probes' fitting timed as the best of these")
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
    fitting = {"batched": float("inf"), "per C": float("inf")}
    probes = {}
    for _ in range(args.fit_repeats):  # interleaved and the best of each, as the features
        for name, fit in (("batched", probe_layer), ("per C", probe_layer_per_c)):
            start = time.perf_counter()
            probes[name] = {layer: fit(feats[layer], ys, k=20) for layer in layers}
            fitting[name] = min(fitting[name], time.perf_counter() - start)
    same_c = sum(choose_c(probes["batched"][layer]["val.probe_by_c"], ys["val"])
                 == choose_c(probes["per C"][layer]["val.probe_by_c"], ys["val"]) for layer in layers)
    gap = max(abs(np.mean(probes["batched"][layer]["test.probe"] == ys["test"])
                  - np.mean(probes["per C"][layer]["test.probe"] == ys["test"])) for layer in layers)
    n = sum(len(s) for s in dataset.splits.values())
    projector = f" + projector ({args.projector_width}, {args.projector_width})" if args.projector_width else ""
    print(f"cnn (16/32/32/32){projector}, random init; {len(layers)} layers: {', '.join(layers)}")
    print(f"{n} images 2x{args.size}x{args.size} (colored_digits resized), batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads; C grid {', '.join(f'{c:g}' for c in DEFAULT_CS)}")
    print(f"same features either way: max |difference| = {drift:.1e}")
    harness = times["one pass per batch"] + fitting["batched"]
    plain = times["one pass per layer"] + fitting["per C"]
    print(f"harness:    features (one pass per batch) {times['one pass per batch']:7.3f} s + probes, every C at once "
          f"{fitting['batched']:7.3f} s = {harness:7.2f} s")
    print(f"plain loop: features (one pass per layer) {times['one pass per layer']:7.3f} s + probes, one fit per C  "
          f"{fitting['per C']:7.3f} s = {plain:7.2f} s")
    print(f"same C chosen on {same_c} of {len(layers)} layers; test probe accuracy differs by at most {100 * gap:.2f} "
          "points")
    for layer in layers:  # a different choice: validation accuracies of both choices under both fits
        accuracy = {name: (p[layer]["val.probe_by_c"] == ys["val"]).mean(1) for name, p in probes.items()}
        chosen = {name: int(np.argmax(a)) for name, a in accuracy.items()}
        if len(set(chosen.values())) > 1:
            print(f"  {layer}: validation accuracy at " + "; ".join(
                f"C={DEFAULT_CS[i]:g} (chosen {'by ' + name if chosen[name] == i else 'by neither'}): "
                + ", ".join(f"{fit} {100 * accuracy[fit][i]:.1f}" for fit in accuracy)
                for name, i in chosen.items()) + f" ({len(ys['val'])} validation examples)")
    print(f"feature extraction ratio: {times['one pass per layer'] / times['one pass per batch']:.2f}; "
          f"probe fitting ratio: {fitting['per C'] / fitting['batched']:.2f}")
    print(f"ratio: {plain / harness:.2f}")


if __name__ == "__main__":
    main()
