"""A protocol defined outside the package, for tests/test_protocol_plugin.py, which registers this
module through the ``shift_harness`` entry-point group: autoencoders scored by reconstruction
error (lower is better). Nothing in the engine knows it."""
import math

import numpy as np
import torch
from torch import nn

from harness.core.registry import ALGORITHMS, PROTOCOLS
from harness.data.dataset import chunks
from harness.models.algorithm import Algorithm
from harness.protocols.base import Display, Protocol, Rule


@PROTOCOLS.register("reconstruction")
class Reconstruction(Protocol):
    """Autoencoding: mean squared reconstruction error per split, lower is better."""

    metrics = {"mse": Display("reconstruction MSE", percent=False, precision=4)}
    rules = (Rule("val-mse", "val", "mse", higher_is_better=False, needs="validation inputs"),
             Rule("oracle", "test", "mse", higher_is_better=False, needs="test inputs"))
    reported = ("test.mse",)
    progress = ("val.mse",)

    def build(self, algorithm, backbone, cfg, dataset, state):
        return algorithm(backbone, math.prod(dataset.input_shape), cfg["algorithm"]["hparams"])

    def batch(self, split, positions, state):
        return split.inputs(positions)

    @torch.no_grad()
    def record(self, algo, name, split, state, batch_size):
        device = split.ids.device
        errors = torch.cat([algo.errors(split.inputs(idx.to(device))).cpu() for idx in chunks(len(split), batch_size)])
        return {"ids": split.ids.cpu().numpy(), "error": errors.numpy().astype(np.float64)}

    def scores(self, arrays, info):
        return {s: {"mse": float(arrays[f"{s}.error"].mean())} for s in self.splits if f"{s}.error" in arrays}


@ALGORITHMS.register("autoencoder")
class Autoencoder(Algorithm):
    """Autoencoder: the backbone encodes, a linear layer decodes the flattened input."""

    protocol = "reconstruction"

    def __init__(self, backbone, input_dim, hparams):
        self.input_dim = input_dim
        super().__init__(backbone, num_classes=0, num_groups=0, hparams=hparams, train_size=0)

    def build(self, backbone):
        self.encoder = backbone()
        self.decoder = nn.Linear(self.encoder.n_outputs, self.input_dim)

    def errors(self, x):
        return ((self.decoder(self.encoder(x)) - x.flatten(1)) ** 2).mean(1)

    def update(self, x, step):
        loss = self.errors(x).mean()
        self.step(loss)
        return {"loss": loss.detach()}
