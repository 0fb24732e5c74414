"""An I-JEPA step through the harness against a hand-written loop on the same ViT, side by side.

Same ViT (timm's VisionTransformer: colored_digits' 2×8×8 images in patches of 1, 64 tokens,
width 64, depth 4, 4 heads, no class token), predictor (width 32, depth 2; the harness's
``Predictor`` module), masks (the harness's ``MultiBlockMasks``, defaults), EMA (0.996 → 1.0
over the run), smooth-L1 loss, online linear probe on the detached features of the batch,
Adam and batch size. The hand-written side writes the loop inline: batching, the encoder on
kept patches, target encoder and layer norm, loss, probe, optimizer step and the EMA. The two alternate, several rounds, in
one process, threads pinned (``--threads``, 1 by default); medians compared. The harness side is
timed from its per-evaluation ``train_seconds`` (evaluation excluded). Before the ratio it
prints the collator's share of a hand-written step. Last line: ``ratio: <harness ex/s over
hand-written>`` (target ≥ 0.95).

    python benchmarks/jepa_step_overhead.py [--steps 60] [--rounds 3] [--smoke]
"""
from __future__ import annotations

import copy
import time

import side_by_side
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from harness.algorithms.ijepa import Predictor
from harness.core.registry import DATASETS
from harness.models.masking import MultiBlockMasks

PATCH, WIDTH, DEPTH, HEADS, PRED_WIDTH, PRED_DEPTH = 1, 64, 4, 4, 32, 2
EMA = (0.996, 1.0)
collator_seconds: list[float] = []
step_seconds: list[float] = []


def tokens(vit: VisionTransformer, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The encoder's patch tokens, run on the patches at ``keep`` only (no class token here)."""
    t = vit.patch_embed(x) + vit.pos_embed
    if keep is not None:
        t = t.gather(1, keep[..., None].expand(-1, -1, WIDTH))
    return vit.norm(vit.blocks(t))


def hand_written(steps: int, batch_size: int) -> float:
    ds = DATASETS.get("colored_digits").obj()
    x, y = ds.splits["train"].x, ds.splits["train"].y
    torch.manual_seed(0)
    encoder = VisionTransformer(img_size=x.shape[2:], patch_size=PATCH, in_chans=x.shape[1], num_classes=0,
                                embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, class_token=False, global_pool="avg",
                                fc_norm=False)
    target = copy.deepcopy(encoder).requires_grad_(False)
    grid = tuple(encoder.patch_embed.grid_size)
    predictor = Predictor(grid, WIDTH, PRED_WIDTH, PRED_DEPTH, 4, 0.0)
    online = nn.Linear(WIDTH, ds.num_classes)
    masks = MultiBlockMasks(grid)
    opt = torch.optim.Adam([*encoder.parameters(), *predictor.parameters(), *online.parameters()], lr=1e-3)
    per_epoch = len(x) // batch_size
    start = time.perf_counter()
    for step in range(steps):
        began = time.perf_counter()
        if step % per_epoch == 0:
            perm = torch.randperm(len(x))
        idx = perm[(step % per_epoch) * batch_size:(step % per_epoch + 1) * batch_size]
        xb, yb = x[idx], y[idx]
        drawn = time.perf_counter()
        context, targets = masks(len(xb))
        collator_seconds.append(time.perf_counter() - drawn)
        with torch.no_grad():
            h = tokens(target, xb)
            h = F.layer_norm(h, h.shape[-1:])
            wanted = torch.cat([h.gather(1, t[..., None].expand(-1, -1, WIDTH)) for t in targets])
        z = tokens(encoder, xb, context)
        loss = F.smooth_l1_loss(predictor(z, context, targets), wanted)
        with torch.no_grad():
            features = encoder(xb)
        loss = loss + F.cross_entropy(online(features), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        m = EMA[0] + (EMA[1] - EMA[0]) * step / steps
        with torch.no_grad():
            for t, o in zip(target.parameters(), encoder.parameters()):
                t.mul_(m).add_(o, alpha=1 - m)
        step_seconds.append(time.perf_counter() - began)
    return steps * batch_size / (time.perf_counter() - start)


def harness_loop(steps: int, batch_size: int, folder: str) -> float:
    return side_by_side.harness_rate(folder, steps, batch_size, "algorithm.name=ijepa", "backbone.name=vit",
                                     f"backbone.options.patch_size={PATCH}", f"backbone.options.width={WIDTH}",
                                     f"backbone.options.depth={DEPTH}", f"backbone.options.heads={HEADS}",
                                     f"algorithm.hparams.predictor_width={PRED_WIDTH}",
                                     f"algorithm.hparams.predictor_depth={PRED_DEPTH}",
                                     f"algorithm.hparams.ema_start={EMA[0]}", f"algorithm.hparams.ema_end={EMA[1]}",
                                     f"algorithm.hparams.ema_steps={steps}")


def collator_share() -> None:
    share = sum(collator_seconds) / sum(step_seconds)
    print(f"collator: {1e3 * sum(collator_seconds) / len(collator_seconds):.2f} ms per batch, "
          f"{100 * share:.1f}% of a hand-written step")


if __name__ == "__main__":
    side_by_side.main(__doc__, harness_loop, hand_written, steps=60, batch_size=128, warmup=5, report=collator_share)
