"""Backbones: feature extractors with ``n_outputs`` and named layers.

Small ones for small images (``mlp``, ``cnn``, DomainBed's ``domainbed_mnist_cnn``), vision transformers over patch
tokens (``vit``; timm's ``VisionTransformer``), for token ids (``text:<vocab size>``), any timm
model by name (``timm:resnet18``, ``timm:vit_tiny_patch16_224``) and any Hugging Face encoder (``hf:<name or local folder>``).
Nothing is downloaded behind the user's back: timm's pretrained weights (``pretrained=True``) and
Hugging Face models must be in their local caches.

Every backbone has the same layer interface, for probes and frozen features at any depth:
``layer_names`` (shallow to deep, the last being ``output``, what ``forward`` returns),
``layer_dims`` (name → feature width) and ``intermediates(x, layers)``, the 2-D features of
several layers from one forward pass that stops after the deepest one asked for. Convolutional
maps are global-average-pooled and token states averaged over the attention mask.

Vision transformers (``TokenLayers``) name one layer per block (its patch tokens averaged) and,
with a class token, one more (``block<i>_cls``); ``tokens(x, keep)`` runs the encoder on the
patches at the given indices only (masked image modeling: ``harness.models.masking``).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from harness.core.errors import HarnessError, unknown
from harness.core.hub import from_local
from harness.core.registry import BACKBONES, Hparam, fixed

OUTPUT = "output"
TIMM_PREFIX = "timm:"


class Layers:
    """The layer interface; subclasses set ``layer_dims`` (ordered, ``output`` last) and
    implement ``_features``."""

    layer_dims: dict[str, int]

    @property
    def layer_names(self) -> list[str]:
        return list(self.layer_dims)

    def intermediates(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """(N × dim) features of each named layer, from one forward pass that stops after the
        deepest of them."""
        for name in layers:
            check_layer(self, name)
        wanted = [n for n in self.layer_names if n in layers]
        return self._features(x, wanted) if wanted else {}

    def _features(self, x: torch.Tensor, wanted: list[str]) -> dict[str, torch.Tensor]:
        """Features of ``wanted`` (known names, shallow to deep)."""
        raise NotImplementedError


def check_layer(net: Any, name: str, kind: str = "layer") -> None:
    """A HarnessError naming the accepted layers when ``name`` is not one of ``net``'s."""
    if name not in net.layer_dims:
        raise unknown(kind, name, net.layer_names)


def pooled(t: torch.Tensor) -> torch.Tensor:
    """A 2-D feature: feature maps (N, C, H, W) averaged over space, anything else flattened."""
    return t.mean((2, 3)) if t.ndim == 4 else t.flatten(1)


class Backbone(Layers, nn.Sequential):
    """A sequence of blocks; ``n_outputs`` is the width of the last one, the layer ``output``.
    ``hidden`` names the blocks just before it, with their widths; blocks before those only
    prepare the input (flattening)."""

    def __init__(self, *blocks: nn.Module, n_outputs: int, hidden: Sequence[tuple[str, int]] = ()):
        super().__init__(*blocks)
        self.n_outputs = n_outputs
        self.layer_dims = {**dict(hidden), OUTPUT: n_outputs}
        self._first = len(blocks) - len(self.layer_dims)  # position of the first named block

    def _features(self, x: torch.Tensor, wanted: list[str]) -> dict[str, torch.Tensor]:
        names = [None] * self._first + self.layer_names
        out = {}
        for block, name in zip(self, names):
            x = block(x)
            if name in wanted:
                out[name] = pooled(x)
                if len(out) == len(wanted):
                    break
        return out


@BACKBONES.register("identity")
def identity(input_shape: tuple[int, ...]) -> Backbone:
    """The inputs themselves, flattened: a linear head on cached frozen features."""
    return Backbone(nn.Flatten(), n_outputs=math.prod(input_shape))


def _hidden_blocks(fan_in: int, width: int, depth: int, dropout: float) -> tuple[list[nn.Module], int]:
    """``depth`` Linear + ReLU + Dropout blocks and the width of the last."""
    blocks: list[nn.Module] = []
    for _ in range(depth):
        blocks.append(nn.Sequential(nn.Linear(fan_in, width), nn.ReLU(), nn.Dropout(dropout)))
        fan_in = width
    return blocks, fan_in


@BACKBONES.register("mlp", hparams={
    "width": Hparam(390, fixed(390), "hidden units per layer", low=1),
    "depth": Hparam(2, fixed(2), "hidden layers", low=0),
    "dropout": Hparam(0.0, fixed(0.0), "dropout after each hidden layer", low=0, high=1, high_open=True),
})
def mlp(input_shape: tuple[int, ...], width: int = 390, depth: int = 2, dropout: float = 0.0) -> Backbone:
    """Multi-layer perceptron on flattened inputs (the ColoredMNIST MLP: 390-390, ReLU).
    Layers: hidden1 .. hidden<depth-1>, output (the last hidden layer)."""
    blocks, n_outputs = _hidden_blocks(math.prod(input_shape), width, depth, dropout)
    hidden = [(f"hidden{i + 1}", width) for i in range(depth - 1)]
    return Backbone(nn.Flatten(), *blocks, n_outputs=n_outputs, hidden=hidden)


LAST_WIDTH_HELP = ("output width D of the last block (Expand or Narrow; 0: unchanged); "
                   "everything before it is unchanged")


@BACKBONES.register("cnn", hparams={
    "channels": Hparam((16, 32, 32, 32), fixed((16, 32, 32, 32)), "channels of each conv block", low=1),
    "last_width": Hparam(0, fixed(0), LAST_WIDTH_HELP, low=0),
})
def cnn(input_shape: tuple[int, ...], channels: tuple[int, ...] = (16, 32, 32, 32), last_width: int = 0) -> Backbone:
    """Small CNN for small images: 3x3 conv + BatchNorm + ReLU blocks, global average pool.
    Layers: block1 .. block<n> (pooled), output (the pool of the last block)."""
    if last_width:
        channels = (*channels[:-1], last_width)
    blocks: list[nn.Module] = []
    fan_in = input_shape[0]
    for i, out in enumerate(channels):
        stride = 2 if i in (1, 2) else 1
        blocks.append(nn.Sequential(nn.Conv2d(fan_in, out, 3, stride=stride, padding=1),
                                    nn.BatchNorm2d(out), nn.ReLU()))
        fan_in = out
    blocks.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    hidden = [(f"block{i + 1}", c) for i, c in enumerate(channels)]
    return Backbone(*blocks, n_outputs=fan_in, hidden=hidden)


@BACKBONES.register("domainbed_mnist_cnn")
def domainbed_mnist_cnn(input_shape: tuple[int, ...]) -> Backbone:
    """DomainBed's MNIST_CNN (Gulrajani & Lopez-Paz, 2021), for comparisons on its model.

    3x3 convs of 64, 128 (stride 2), 128, 128 channels, each followed by ReLU then GroupNorm with
    8 groups; global average pool to 128 features. Layers: conv1 .. conv4 (pooled), output."""
    channels, blocks, fan_in = (64, 128, 128, 128), [], input_shape[0]
    for i, out in enumerate(channels):
        blocks.append(nn.Sequential(nn.Conv2d(fan_in, out, 3, stride=2 if i == 1 else 1, padding=1), nn.ReLU(),
                                    nn.GroupNorm(8, out)))
        fan_in = out
    blocks.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    return Backbone(*blocks, n_outputs=fan_in, hidden=[(f"conv{i + 1}", c) for i, c in enumerate(channels)])


def _check_tokens(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 2 or input_shape[0] != 2:
        raise HarnessError(f"backbone {name!r} reads token ids and attention masks, inputs of shape (2, length); "
                           f"this dataset's inputs have shape {tuple(input_shape)}")


class TokenMean(nn.Module):
    """Learned token embeddings averaged over the tokens the attention mask keeps: inputs are
    (N, 2, length) token ids and masks, so padding needs no id of its own."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab_size, dim, mode="sum")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = x[:, 1].float()
        return self.bag(x[:, 0], per_sample_weights=mask / mask.sum(1, keepdim=True).clamp(min=1))


@BACKBONES.register("text", argument=("vocab_size", int), hparams={
    "embed_dim": Hparam(128, fixed(128), "token embedding width", low=1),
    "width": Hparam(256, fixed(256), "hidden units per layer", low=1),
    "depth": Hparam(1, fixed(1), "hidden layers after the mean embedding", low=0),
    "dropout": Hparam(0.0, fixed(0.0), "dropout after each hidden layer", low=0, high=1, high_open=True),
})
def text(input_shape: tuple[int, ...], vocab_size: int, embed_dim: int = 128, width: int = 256, depth: int = 1,
         dropout: float = 0.0) -> Backbone:
    """Token embeddings averaged over the text, then an MLP (``text:<vocab size>``).

    Text datasets name it with their tokenizer's vocabulary size. Layers: embedding, hidden1 ..,
    output."""
    _check_tokens(f"text:{vocab_size}", input_shape)
    blocks, n_outputs = _hidden_blocks(embed_dim, width, depth, dropout)
    hidden = [("embedding", embed_dim), *[(f"hidden{i}", width) for i in range(1, depth)]] if depth else []
    return Backbone(TokenMean(vocab_size, embed_dim), *blocks, n_outputs=n_outputs, hidden=hidden)


class TimmLayers(Layers):
    """The layer interface of a timm model: its feature stages (``feature_info``'s module names)
    through timm's ``forward_intermediates``, then ``output``. Mixed into the model's own class
    rather than wrapped around it, so parameter names stay timm's: checkpoints and feature-cache
    keys (a hash of the named weights) are those of the plain model."""

    @property
    def layer_dims(self) -> dict[str, int]:
        stages = self.feature_info if hasattr(self, "forward_intermediates") else []
        return {**{s["module"]: s["num_chs"] for s in stages}, OUTPUT: self.n_outputs}

    def _features(self, x: torch.Tensor, wanted: list[str]) -> dict[str, torch.Tensor]:
        stages = [n for n in wanted if n != OUTPUT]
        if not stages:
            return {OUTPUT: self(x)}
        indices = [self.layer_names.index(n) for n in stages]
        out = {}
        if OUTPUT in wanted:
            final, maps = self.forward_intermediates(x, indices=indices)
            out[OUTPUT] = self.forward_head(final)
        else:
            maps = self.forward_intermediates(x, indices=indices, intermediates_only=True, stop_early=True)
        out.update(zip(stages, map(pooled, maps)))
        return out


class TokenLayers(Layers):
    """The layer interface of a timm ``VisionTransformer`` (mixed into its class, parameter names
    unchanged): per block ``block<i>``, the block's patch tokens averaged, and ``block<i>_cls``,
    its class token, where there is one; ``output`` as ``forward`` pools it. Token access:
    ``grid`` (patches per column and row) and ``tokens`` (the encoder on chosen patches)."""

    @property
    def layer_dims(self) -> dict[str, int]:
        dims: dict[str, int] = {}
        for i in range(1, len(self.blocks) + 1):
            dims[f"block{i}"] = self.embed_dim
            if self.cls_token is not None:
                dims[f"block{i}_cls"] = self.embed_dim
        return {**dims, OUTPUT: self.n_outputs}

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.patch_embed.grid_size)

    def tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(N, k, width) patch tokens after the last block and norm, the encoder run on the
        patches at ``keep`` (N, k) only (row-major indices into ``grid``; None: all of them);
        the class token, if any, attends too but is not returned."""
        t = self._pos_embed(self.patch_embed(x))
        prefix = self.num_prefix_tokens
        if keep is not None:
            patches = t[:, prefix:].gather(1, keep.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
            t = torch.cat([t[:, :prefix], patches], 1)
        return self.norm(self.blocks(self.norm_pre(t)))[:, prefix:]

    def _features(self, x: torch.Tensor, wanted: list[str]) -> dict[str, torch.Tensor]:
        blocks = sorted({int(n[5:].split("_")[0]) - 1 for n in wanted if n != OUTPUT})
        if not blocks:
            return {OUTPUT: self(x)}
        prefix = self.cls_token is not None
        options = {"indices": blocks, "return_prefix_tokens": prefix, "output_fmt": "NLC"}
        out = {}
        if OUTPUT in wanted:
            final, maps = self.forward_intermediates(x, **options)
            out[OUTPUT] = self.forward_head(final)
        else:
            maps = self.forward_intermediates(x, intermediates_only=True, stop_early=True, **options)
        for i, got in zip(blocks, maps):
            patches, cls = got if prefix else (got, None)
            if f"block{i + 1}" in wanted:
                out[f"block{i + 1}"] = patches.mean(1)
            if f"block{i + 1}_cls" in wanted:
                out[f"block{i + 1}_cls"] = cls[:, 0]
        return out


@functools.cache
def _with_layers(cls: type) -> type:
    from timm.models.vision_transformer import VisionTransformer

    mixin = TokenLayers if issubclass(cls, VisionTransformer) else TimmLayers
    return type(cls.__name__, (mixin, cls), {"__module__": cls.__module__})


def _check_patches(name: str, input_shape: tuple[int, ...], patch: int) -> None:
    if len(input_shape) != 3 or input_shape[1] % patch or input_shape[2] % patch:
        raise HarnessError(f"backbone option patch_size: {patch} does not divide the image size "
                           f"{'x'.join(map(str, input_shape[1:]))} of {name}; accepted: a divisor of height and width")


@BACKBONES.register("vit", hparams={
    "patch_size": Hparam(2, fixed(2), "patch side in pixels (divides the image's height and width)", low=1),
    "width": Hparam(64, fixed(64), "token width", low=1),
    "depth": Hparam(4, fixed(4), "transformer blocks (0: patch embedding and norm only)", low=0),
    "heads": Hparam(4, fixed(4), "attention heads (divide the width)", low=1),
    "mlp_ratio": Hparam(4.0, fixed(4.0), "MLP hidden width over token width", low=0, low_open=True),
    "class_token": Hparam(False, fixed(False), "a class token (output: it; else the mean patch token)"),
})
def vit(input_shape: tuple[int, ...], patch_size: int = 2, width: int = 64, depth: int = 4, heads: int = 4,
        mlp_ratio: float = 4.0, class_token: bool = False) -> nn.Module:
    """A vision transformer over patch tokens (timm's VisionTransformer, learned positions).

    Layers: block1 .. block<depth> (mean patch token; block<i>_cls with a class token), output
    (the final-normed class token, or the mean of the final-normed patch tokens)."""
    from timm.models.vision_transformer import VisionTransformer

    _check_patches("vit", input_shape, patch_size)
    if width % heads:
        raise HarnessError(f"backbone option heads: {heads} does not divide the width {width}; accepted: a divisor")
    net = VisionTransformer(img_size=tuple(input_shape[1:]), patch_size=patch_size, in_chans=input_shape[0],
                            num_classes=0, embed_dim=width, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio,
                            class_token=class_token, global_pool="token" if class_token else "avg", fc_norm=False)
    net.__class__ = _with_layers(type(net))
    net.n_outputs = net.num_features
    return net


@BACKBONES.register("timm", argument=("model", str), hparams={
    "pretrained": Hparam(False, fixed(False), "load timm's pretrained weights (from its local cache)"),
    "last_width": Hparam(0, fixed(0), LAST_WIDTH_HELP + " (ResNet family only)", low=0),
})
def timm_backbone(input_shape: tuple[int, ...], model: str = "resnet18", pretrained: bool = False,
                  last_width: int = 0, **kwargs: Any) -> nn.Module:
    """Any timm model by name, written ``timm:<name>``, without its classifier (``vit_*``: for the inputs' image size)."""
    import timm

    if model not in timm.list_models() and model not in timm.list_models(pretrained=True):
        raise HarnessError(f"unknown timm model {model!r}; see timm.list_models() for the accepted names")
    if model.startswith("vit_") and len(input_shape) == 3:
        kwargs.setdefault("img_size", tuple(input_shape[1:]))  # positions for these images (resampled if pretrained)
    net = timm.create_model(model, pretrained=pretrained, num_classes=0, in_chans=input_shape[0], **kwargs)
    if hasattr(net, "patch_embed") and "img_size" in kwargs:
        _check_patches(f"timm:{model}", input_shape, net.patch_embed.patch_size[0])
    if last_width:
        _resnet_last_width(net, model, last_width)
    net.__class__ = _with_layers(type(net))
    net.n_outputs = net.num_features
    return net


def _conv_like(conv: nn.Conv2d, out_channels: int) -> nn.Conv2d:
    new = nn.Conv2d(conv.in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, bias=conv.bias is not None)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")  # timm's ResNet init
    return new


def _norm_like(norm: nn.Module, width: int) -> nn.Module:
    new = type(norm)(width)
    if getattr(norm, "weight", None) is not None and not norm.weight.detach().any():
        nn.init.zeros_(new.weight)  # timm's zero_init_last
    return new


def _resnet_last_width(net: nn.Module, model: str, width: int) -> None:
    """Set the output width of the last block of a timm ResNet-family model to ``width``: its
    last conv and norm (and the shortcut: a 1x1 conv + norm projection where the widths
    differ; an existing projection's last conv and norm are resized). Everything else is unchanged."""
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet

    if not isinstance(net, ResNet):
        raise HarnessError(f"backbone option last_width: timm model {model!r} is not of the ResNet family "
                           "(timm.models.resnet.ResNet); accepted: resnet18, resnet50, resnext, wide_resnet, ...")
    block = net.layer4[-1]
    if getattr(block, "se", None) is not None:
        raise HarnessError(f"backbone option last_width: {model!r} has attention in its last block, not supported")
    conv, norm = ("conv3", "bn3") if isinstance(block, Bottleneck) else ("conv2", "bn2")
    assert isinstance(block, (BasicBlock, Bottleneck))
    old = getattr(block, conv)
    setattr(block, conv, _conv_like(old, width))
    setattr(block, norm, _norm_like(getattr(block, norm), width))
    if block.downsample is not None:
        mods = list(block.downsample.named_children())
        last_conv = [n for n, m in mods if isinstance(m, nn.Conv2d)][-1]
        last_norm = [n for n, m in mods if not isinstance(m, (nn.Conv2d, nn.Identity)) and hasattr(m, "num_features")][-1]
        setattr(block.downsample, last_conv, _conv_like(getattr(block.downsample, last_conv), width))
        setattr(block.downsample, last_norm, type(getattr(block.downsample, last_norm))(width))
    else:
        fan_in = block.conv1.in_channels
        if fan_in != width:
            block.downsample = nn.Sequential(_conv_like(nn.Conv2d(fan_in, width, 1, bias=False), width),
                                             type(getattr(block, "bn1"))(width))
    net.num_features = width
    if hasattr(net, "head_hidden_size"):
        net.head_hidden_size = width
    net.feature_info[-1] = {**net.feature_info[-1], "num_chs": width}


def parameter_count(name: str, input_shape: tuple[int, ...], options: dict[str, Any]) -> int:
    """Parameters of the backbone ``name`` with ``options`` on inputs of ``input_shape``; built
    with the RNG state restored afterwards, so counting changes no run."""
    with torch.random.fork_rng(devices=[]):
        return sum(p.numel() for p in backbone_factory(name, input_shape, options)().parameters())


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, length, dim) token states averaged over the tokens where ``mask`` (N, length) is 1."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1)


class HFBackbone(Layers, nn.Module):
    """A Hugging Face encoder on (N, 2, length) token ids and masks; features are hidden states
    averaged over the mask. Layers: embedding, hidden1 .. hidden<n> (``hidden_states`` by
    index), output (the last hidden state, as ``forward`` gives it). Hugging Face models run all
    their layers, so ``intermediates`` does not stop early here."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.n_outputs = model.config.hidden_size
        depth = model.config.num_hidden_layers
        self.layer_dims = {"embedding": self.n_outputs, **{f"hidden{i}": self.n_outputs for i in range(1, depth + 1)},
                           OUTPUT: self.n_outputs}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return masked_mean(self.model(input_ids=x[:, 0], attention_mask=x[:, 1]).last_hidden_state, x[:, 1])

    def _features(self, x: torch.Tensor, wanted: list[str]) -> dict[str, torch.Tensor]:
        out = self.model(input_ids=x[:, 0], attention_mask=x[:, 1], output_hidden_states=wanted != [OUTPUT])
        states = {**dict(zip(self.layer_names, out.hidden_states or ())), OUTPUT: out.last_hidden_state}
        return {n: masked_mean(states[n], x[:, 1]) for n in wanted}


@BACKBONES.register("hf", argument=("model", str))
def hf_backbone(input_shape: tuple[int, ...], model: str) -> HFBackbone:
    """A Hugging Face encoder, written ``hf:<name or local folder>``, from the local cache only."""
    _check_tokens(f"hf:{model}", input_shape)
    net = from_local("AutoModel", model, "backbone hf:")
    return HFBackbone(net)


def backbone_factory(name: str, input_shape: tuple[int, ...], options: dict[str, Any]) -> Callable[[], nn.Module]:
    """A function that builds a fresh backbone each time it is called."""
    entry, from_name = BACKBONES.family(name)
    options = {k: entry.hparams[k].check(f"backbone option {k!r} of {entry.name}", v) if k in entry.hparams else v
               for k, v in {**from_name, **options}.items()}
    return lambda: entry.obj(tuple(input_shape), **options)
