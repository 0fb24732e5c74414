"""Backbones: feature extractors with an ``n_outputs`` attribute.

Small ones for small images (``mlp``, ``cnn``) and any timm model by name (``timm:resnet18``),
randomly initialised unless ``pretrained=True`` is asked for (timm then needs the weights in its
local cache: nothing is downloaded behind the user's back).
"""
from __future__ import annotations

import math
from typing import Any, Callable

from torch import nn

from harness.core.errors import HarnessError
from harness.core.registry import BACKBONES, Hparam, fixed

TIMM_PREFIX = "timm:"


class Backbone(nn.Sequential):
    """A sequence of blocks; ``n_outputs`` is the width of the last one. Being a sequence, its
    intermediate outputs (one per block) are the per-layer features probes read."""

    def __init__(self, *blocks: nn.Module, n_outputs: int):
        super().__init__(*blocks)
        self.n_outputs = n_outputs


@BACKBONES.register("identity")
def identity(input_shape: tuple[int, ...]) -> Backbone:
    """The inputs themselves, flattened: a linear head on cached frozen features."""
    return Backbone(nn.Flatten(), n_outputs=math.prod(input_shape))


@BACKBONES.register("mlp", hparams={
    "width": Hparam(390, fixed(390), "hidden units per layer"),
    "depth": Hparam(2, fixed(2), "hidden layers"),
    "dropout": Hparam(0.0, fixed(0.0), "dropout after each hidden layer"),
})
def mlp(input_shape: tuple[int, ...], width: int = 390, depth: int = 2, dropout: float = 0.0) -> Backbone:
    """Multi-layer perceptron on flattened inputs (the ColoredMNIST MLP: 390-390, ReLU)."""
    blocks: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for _ in range(depth):
        blocks.append(nn.Sequential(nn.Linear(fan_in, width), nn.ReLU(), nn.Dropout(dropout)))
        fan_in = width
    return Backbone(*blocks, n_outputs=fan_in)


@BACKBONES.register("cnn", hparams={
    "channels": Hparam((16, 32, 32, 32), fixed((16, 32, 32, 32)), "channels of each conv block"),
})
def cnn(input_shape: tuple[int, ...], channels: tuple[int, ...] = (16, 32, 32, 32)) -> Backbone:
    """Small CNN for small images: 3x3 conv + BatchNorm + ReLU blocks, global average pool."""
    blocks: list[nn.Module] = []
    fan_in = input_shape[0]
    for i, out in enumerate(channels):
        stride = 2 if i in (1, 2) else 1
        blocks.append(nn.Sequential(nn.Conv2d(fan_in, out, 3, stride=stride, padding=1),
                                    nn.BatchNorm2d(out), nn.ReLU()))
        fan_in = out
    blocks.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    return Backbone(*blocks, n_outputs=fan_in)


@BACKBONES.register("timm", hparams={
    "pretrained": Hparam(False, fixed(False), "load timm's pretrained weights (from its local cache)"),
})
def timm_backbone(input_shape: tuple[int, ...], model: str = "resnet18", pretrained: bool = False,
                  **kwargs: Any) -> nn.Module:
    """Any timm model by name, written ``timm:<name>``, without its classifier."""
    import timm

    if model not in timm.list_models() and model not in timm.list_models(pretrained=True):
        raise HarnessError(f"unknown timm model {model!r}; see timm.list_models() for the accepted names")
    net = timm.create_model(model, pretrained=pretrained, num_classes=0, in_chans=input_shape[0], **kwargs)
    net.n_outputs = net.num_features
    return net


def backbone_factory(name: str, input_shape: tuple[int, ...], options: dict[str, Any]) -> Callable[[], nn.Module]:
    """A function that builds a fresh backbone each time it is called."""
    if name.startswith(TIMM_PREFIX):
        options = {"model": name[len(TIMM_PREFIX):], **options}
        name = "timm"
    build = BACKBONES.get(name).obj
    return lambda: build(tuple(input_shape), **options)
