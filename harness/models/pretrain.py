"""What pretraining methods share (``algorithms/ssl.py``, the ``pretraining`` protocol): views
from augmentations, the projector, the network transfer probes read (backbone + projector
layers) and the base class with its online linear probe.

Views (``views`` hparam, torchvision.transforms.v2, drawn per example from torch's global RNG,
so checkpointed RNG state makes a resumed run see the same views):

- ``gaussian_noise``: x + N(0, noise_std²) per element (any input shape);
- ``crop_flip``: random resized crop (scale 0.3–1) and horizontal flip, per image;
- ``simclr``: crop_flip, then on 3-channel images colour jitter (p 0.8) and greyscale (p 0.2);
- ``none``: the input itself (two identical views).

The online probe is a linear head on the *detached* backbone output, trained on the training
batch's labels (examples labelled -1 are skipped) beside the objective; it never changes the
backbone, and its accuracy on the held-out splits is what the protocol logs per evaluation.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.errors import HarnessError
from harness.core.registry import Hparam, choice, uniform
from harness.models.algorithm import Algorithm, Batch
from harness.models.backbones import OUTPUT, Layers

VIEWS = ("gaussian_noise", "crop_flip", "simclr", "none")


def make_views(preset: str, input_shape: Sequence[int], noise_std: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from a batch to one random view of each of its examples."""
    from torchvision.transforms import v2

    if preset == "none":
        return lambda x: x
    if preset == "gaussian_noise":
        noise = v2.GaussianNoise(mean=0.0, sigma=noise_std, clip=False)
        return lambda x: noise(x.float())
    if len(input_shape) != 3:
        raise HarnessError(f"views {preset!r} crop and flip images (C, H, W); these inputs have shape "
                           f"{tuple(input_shape)}; accepted here: gaussian_noise, none")
    c, h, w = input_shape
    steps: list[Any] = [v2.RandomResizedCrop((h, w), scale=(0.3, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    if preset == "simclr" and c == 3:
        steps += [v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), v2.RandomGrayscale(p=0.2)]
    one = v2.Compose(steps)
    return lambda x: torch.stack([one(image) for image in x.float()])


def projector(fan_in: int, depth: int, width: int) -> nn.Sequential:
    """``depth`` linear layers of ``width`` (the hidden ones with BatchNorm + ReLU); depth 0: none
    (an empty Sequential, the identity)."""
    blocks: list[nn.Module] = []
    for i in range(depth):
        last = i == depth - 1
        layer = nn.Linear(fan_in, width, bias=last)
        blocks.append(layer if last else nn.Sequential(layer, nn.BatchNorm1d(width), nn.ReLU()))
        fan_in = width
    return nn.Sequential(*blocks)


class Projected(Layers, nn.Module):
    """Backbone then projector, as one network with named layers: the backbone's (its output
    renamed ``backbone``), ``projector1`` .. (the projector's hidden layers), ``output`` (the
    projector's output, what ``forward`` returns). Parameter names are the two modules'."""

    def __init__(self, backbone: nn.Module, head: nn.Sequential):
        super().__init__()
        self.backbone, self.projector = backbone, head
        widths = [m.out_features for m in (b[0] if isinstance(b, nn.Sequential) else b for b in head)]
        inner = {("backbone" if k == OUTPUT else k): v for k, v in backbone.layer_dims.items()}
        self.layer_dims = {**inner, **{f"projector{i + 1}": d for i, d in enumerate(widths[:-1])}, OUTPUT: widths[-1]}
        self.n_outputs = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))

    def _features(self, x: torch.Tensor, wanted: list[str]) -> dict[str, torch.Tensor]:
        inner = [OUTPUT if n == "backbone" else n for n in wanted if n in self.backbone.layer_dims or n == "backbone"]
        heads = [n for n in wanted if n.startswith("projector") or n == OUTPUT]
        if heads and OUTPUT not in inner:
            inner.append(OUTPUT)
        got = self.backbone.intermediates(x, inner)
        out = {("backbone" if k == OUTPUT else k): v for k, v in got.items() if k != OUTPUT or "backbone" in wanted}
        if heads:
            z = got[OUTPUT]
            names = [*(f"projector{i + 1}" for i in range(len(self.projector) - 1)), OUTPUT]
            for block, name in zip(self.projector, names):
                z = block(z)
                if name in wanted:
                    out[name] = z
                if len(out) == len(wanted):
                    break
        return out


PROJECTOR_HPARAMS = {
    "projector_depth": Hparam(2, choice(0, 1, 2, 3), "linear layers of the projector (0: none)", low=0),
    "projector_width": Hparam(128, choice(64, 128, 256), "width of each projector layer", low=1),
}
VIEW_HPARAMS = {
    "views": Hparam("gaussian_noise", choice("gaussian_noise"), "augmentation preset: " + ", ".join(VIEWS),
                    choices=VIEWS),
    "noise_std": Hparam(0.1, uniform(0.05, 0.3), "std of the gaussian_noise views", low=0),
}


class Pretrainer(Algorithm):
    """Base of pretraining methods: a backbone, a projector (``projector_depth`` 0: none), two
    views per example, an objective on them (``objective``) and the online probe."""

    protocol = "pretraining"
    data_parallel = True
    uses_projector = True
    hparams = {**Algorithm.hparams, **VIEW_HPARAMS, **PROJECTOR_HPARAMS}

    def __init__(self, backbone: Callable[[], nn.Module], num_classes: int, input_shape: Sequence[int],
                 hparams: dict[str, Any], train_size: int):
        self.input_shape = tuple(input_shape)
        super().__init__(backbone, num_classes, 0, hparams, train_size)
        self.views = make_views(self.hp["views"], self.input_shape, self.hp["noise_std"])

    def build(self, backbone: Callable[[], nn.Module]) -> None:
        self.featurizer = backbone()
        depth = self.hp.get("projector_depth", 0) if self.uses_projector else 0
        self.projector = projector(self.featurizer.n_outputs, depth, self.hp.get("projector_width", 1))
        self.online = nn.Linear(self.featurizer.n_outputs, self.num_classes)
        self.build_head()

    def build_head(self) -> None:
        """Modules besides backbone, projector and online probe (the supervised classifier)."""

    def embed_width(self) -> int:
        return self.projector[-1].out_features if len(self.projector) else self.featurizer.n_outputs

    def objective(self, h1: torch.Tensor, h2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor,
                  batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The method's loss from backbone outputs ``h`` and projections ``z`` of the two views."""
        raise NotImplementedError

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        with self.precision():
            views = torch.cat([self.views(batch.x), self.views(batch.x)])
            h = self.featurizer(views)
            z = self.projector(h)
        h, z = h.float(), z.float()
        b = len(batch.x)
        loss, logs = self.objective(h[:b], h[b:], z[:b], z[b:], batch)
        labelled = batch.y >= 0
        probe_loss = (F.cross_entropy(self.online(h[:b][labelled].detach()), batch.y[labelled]) if labelled.any()
                      else h.new_zeros(()))
        self.step(loss + probe_loss)
        return {"loss": loss.detach(), "probe_loss": probe_loss.detach(), **{k: v.detach() for k, v in logs.items()}}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The online probe's logits."""
        with self.precision():
            return self.online(self.featurizer(x)).float()

    def probe_network(self) -> nn.Module:
        return Projected(self.featurizer, self.projector) if len(self.projector) else self.featurizer
