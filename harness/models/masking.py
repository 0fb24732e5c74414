"""What masked image modeling methods share (``algorithms/ijepa.py``, ``algorithms/mae.py``): patch
masks, fixed 2-D sin-cos positions, a narrow transformer over context and mask tokens, and the
base class (a token backbone, the online probe).

Masks are drawn from torch's global (CPU) RNG, which the run checkpoint holds, so a resumed run
draws the masks of an uninterrupted one. Patch indices are row-major over the backbone's
``grid`` (timm's patch order).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.errors import HarnessError
from harness.models.algorithm import Algorithm

Grid = tuple[int, int]
MASK_TRIES = 100  # redraws of the examples whose context keeps fewer than min_keep patches


def block_size(scale: float, aspect: float, grid: Grid) -> tuple[int, int]:
    """Rows and columns of a block covering ``scale`` of the grid with height/width ``aspect``
    (I-JEPA's rounding), at least 1 and at most the grid."""
    area = scale * grid[0] * grid[1]
    h = min(max(round(math.sqrt(area * aspect)), 1), grid[0])
    w = min(max(round(math.sqrt(area / aspect)), 1), grid[1])
    return h, w


def smallest_block(scale: Sequence[float], aspect: Sequence[float], grid: Grid) -> int:
    """The fewest patches a block drawn from these ranges can have (rounding is not monotone:
    the ranges are scanned)."""
    steps = torch.linspace(0, 1, 41).tolist()
    return min(math.prod(block_size(scale[0] + a * (scale[1] - scale[0]), aspect[0] + b * (aspect[1] - aspect[0]),
                                    grid)) for a in steps for b in steps)


def random_blocks(n: int, h: int, w: int, grid: Grid) -> torch.Tensor:
    """(n, patches) booleans: one h × w block per example, placed uniformly."""
    top = torch.randint(0, grid[0] - h + 1, (n, 1))
    left = torch.randint(0, grid[1] - w + 1, (n, 1))
    rows, cols = torch.arange(grid[0]), torch.arange(grid[1])
    inside_rows = (rows >= top) & (rows < top + h)
    inside_cols = (cols >= left) & (cols < left + w)
    return (inside_rows[:, :, None] & inside_cols[:, None, :]).flatten(1)


def _uniform(bounds: Sequence[float]) -> float:
    return bounds[0] + float(torch.rand(())) * (bounds[1] - bounds[0])


class MultiBlockMasks:
    """I-JEPA's multi-block masks: ``num_targets`` target blocks, one size per batch (scale and
    aspect drawn uniformly from their ranges), and one context block (its own scale and aspect)
    with every target patch removed from it. An example whose context keeps fewer than
    ``min_keep`` patches is redrawn (targets and context). Contexts of a batch are cut to the
    same length, the shortest one's, by keeping a random subset of each (the original keeps
    the first ones in raster order)."""

    def __init__(self, grid: Grid, num_targets: int = 4, target_scale: Sequence[float] = (0.15, 0.2),
                 target_aspect: Sequence[float] = (0.75, 1.5), context_scale: Sequence[float] = (0.85, 1.0),
                 context_aspect: Sequence[float] = (1.0, 1.0), min_keep: int = 4):
        self.grid, self.num_targets, self.min_keep = tuple(grid), num_targets, min_keep
        self.target_scale, self.target_aspect = tuple(target_scale), tuple(target_aspect)
        self.context_scale, self.context_aspect = tuple(context_scale), tuple(context_aspect)
        patches = grid[0] * grid[1]
        fewest = smallest_block(self.target_scale, self.target_aspect, self.grid)
        if num_targets * fewest + min_keep > patches:
            raise HarnessError(f"algorithm hparam num_targets: {num_targets} target blocks of at least {fewest} "
                               f"patches and min_keep {min_keep} need more than the {patches} patches of the "
                               f"{grid[0]}x{grid[1]} grid; accepted: fewer or smaller targets, or a smaller min_keep")
        largest = max(math.prod(block_size(s, a, self.grid)) for s in self.context_scale for a in self.context_aspect)
        if largest < min_keep:
            raise HarnessError(f"algorithm hparam min_keep: {min_keep} exceeds the context block's {largest} patches; "
                               "accepted: a smaller min_keep or a larger context_scale")

    def __call__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Context (n, k) and targets (num_targets, n, h·w): sorted patch indices."""
        th, tw = block_size(_uniform(self.target_scale), _uniform(self.target_aspect), self.grid)
        ch, cw = block_size(_uniform(self.context_scale), _uniform(self.context_aspect), self.grid)

        def draw(m: int) -> tuple[torch.Tensor, torch.Tensor]:
            targets = torch.stack([random_blocks(m, th, tw, self.grid) for _ in range(self.num_targets)])
            return targets, random_blocks(m, ch, cw, self.grid) & ~targets.any(0)

        targets, context = draw(n)
        for _ in range(MASK_TRIES):
            short = context.sum(1) < self.min_keep
            if not short.any():
                break
            targets[:, short], context[short] = draw(int(short.sum()))
        else:
            raise HarnessError(f"no context with min_keep {self.min_keep} patches in {MASK_TRIES} draws of "
                               f"{self.num_targets} {th}x{tw} targets and a {ch}x{cw} context on the "
                               f"{self.grid[0]}x{self.grid[1]} grid; lower num_targets, target_scale or min_keep")
        keep = int(context.sum(1).min())
        scores = torch.rand(context.shape).masked_fill(~context, -1.0)
        chosen = scores.topk(keep, 1).indices.sort(1).values
        return chosen, targets.nonzero()[:, 2].view(self.num_targets, n, th * tw)


def random_masks(n: int, patches: int, visible: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MAE's masks: per example ``visible`` patches uniformly at random and the rest, (n, visible)
    and (n, patches - visible) sorted indices."""
    order = torch.rand(n, patches).argsort(1)
    return order[:, :visible].sort(1).values, order[:, visible:].sort(1).values


def sincos_positions(width: int, grid: Grid) -> torch.Tensor:
    """(patches, width) fixed 2-D sin-cos positions (MAE's): half the width encodes the row,
    half the column, each as sines and cosines at geometric frequencies."""
    if width % 4:
        raise HarnessError(f"2-D sin-cos positions need a width divisible by 4, got {width}")
    freq = 1.0 / 10000 ** (torch.arange(width // 4, dtype=torch.float64) / (width // 4))
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angle = pos.flatten().double()[:, None] * freq[None]
        return torch.cat([angle.sin(), angle.cos()], 1)

    return torch.cat([encode(rows), encode(cols)], 1).float()


def gather_tokens(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Tokens (N, L, D) at ``index`` (N, k): (N, k, D)."""
    return t.gather(1, index.unsqueeze(-1).expand(-1, -1, t.shape[-1]))


def check_mixer(hparams: dict[str, Any], prefix: str) -> None:
    """A :class:`TokenMixer`'s ``<prefix>_width`` and ``<prefix>_heads`` hyperparameters fit it:
    the width carries 2-D sin-cos positions (a multiple of 4) and splits into the heads."""
    width, heads = hparams[f"{prefix}_width"], hparams[f"{prefix}_heads"]
    if width % 4:
        raise HarnessError(f"algorithm hparam {prefix}_width must be a multiple of 4 (its 2-D sin-cos "
                           f"positions), got {width}")
    if width % heads:
        raise HarnessError(f"algorithm hparam {prefix}_heads: {heads} does not divide {prefix}_width {width}")


class TokenMixer(nn.Module):
    """A narrow transformer over known tokens and mask tokens: the encoder's tokens mapped to
    ``width`` (``embed``) plus fixed sin-cos positions, mask tokens (one learned vector) plus the
    positions they stand for, ``depth`` timm blocks, a norm and a map to ``out`` features of the
    mask tokens. I-JEPA's predictor and MAE's decoder."""

    def __init__(self, grid: Grid, fan_in: int, width: int, depth: int, heads: int, out: int):
        from timm.models.vision_transformer import Block

        super().__init__()
        self.embed = nn.Linear(fan_in, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.register_buffer("positions", sincos_positions(width, grid), persistent=False)
        self.blocks = nn.Sequential(*(Block(width, heads, qkv_bias=True) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, out)

    def known(self, z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Embedded known tokens at their positions."""
        return self.embed(z) + self.positions[index]

    def masked(self, index: torch.Tensor) -> torch.Tensor:
        """Mask tokens standing for the patches at ``index`` (any shape of indices)."""
        return self.mask_token + self.positions[index]

    def mix(self, tokens: torch.Tensor, queries: int) -> torch.Tensor:
        """The blocks over ``tokens`` (known ones first); the last ``queries`` outputs, mapped out."""
        return self.head(self.norm(self.blocks(tokens))[:, tokens.shape[1] - queries:])


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Images (N, C, H, W) → (N, patches, patch·patch·C) pixels per patch, patches row-major."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // patch) * (w // patch), patch * patch * c)


class MaskedPretrainer(Algorithm):
    """Base of masked image modeling methods: a token backbone (``vit``, ``timm:vit_*``; the
    probed network) and the online probe, a linear head on its detached features of the batch's
    labelled examples (examples labelled -1 are skipped), trained beside the objective."""

    protocol = "pretraining"
    data_parallel = True

    def __init__(self, backbone: Callable[[], nn.Module], num_classes: int, input_shape: Sequence[int],
                 hparams: dict[str, Any], train_size: int):
        self.input_shape = tuple(input_shape)
        super().__init__(backbone, num_classes, 0, hparams, train_size)

    def build(self, backbone: Callable[[], nn.Module]) -> None:
        self.featurizer = backbone()
        if not hasattr(self.featurizer, "tokens"):
            raise HarnessError(f"{type(self).__name__.lower()} masks patch tokens: it needs a token backbone; accepted: "
                               "vit, timm:vit_* (backbone.name)")
        self.online = nn.Linear(self.featurizer.n_outputs, self.num_classes)
        self.build_method()

    def build_method(self) -> None:
        """The method's own modules."""
        raise NotImplementedError

    @property
    def grid(self) -> Grid:
        return self.featurizer.grid

    def probe_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The online probe's cross-entropy on the labelled examples' features (no gradient to
        the backbone); zero when none is labelled."""
        labelled = y >= 0
        if not labelled.any():
            return self.online.weight.new_zeros(())
        with torch.no_grad():
            h = self.featurizer(x[labelled]).float()
        return F.cross_entropy(self.online(h), y[labelled])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The online probe's logits."""
        with self.precision():
            return self.online(self.featurizer(x)).float()
