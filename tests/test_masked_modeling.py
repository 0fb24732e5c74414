"""Masked image modeling on ViTs: I-JEPA's multi-block masks and EMA target, StoP's noise on the
mask tokens' positions, MAE's masked-pixel loss; each loss falls on a toy run, a run resumes
exactly, bad settings are refused before anything is written."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from harness.cli import main
from harness.core import config as configs
from harness.core.errors import HarnessError
from harness.core.files import read_jsonl
from harness.models.masking import MultiBlockMasks, block_size, patchify, random_masks, sincos_positions
from harness.runs.run import build_algorithm, build_dataset, protocol_of, train
from harness.sweeps.launchers import Local
from harness.sweeps.planner import Planner, resolved_run, run_plan

VIT = ["backbone.name=vit", "backbone.options.width=16", "backbone.options.depth=2", "backbone.options.heads=2"]


def cfg_of(tmp_path, name, *extra):
    return configs.load(None, [f"output_dir={tmp_path / 'runs'}", f"algorithm.name={name}", "steps=6",
                               "eval_every=3", "device=cpu", "algorithm.hparams.batch_size=16", *VIT, *extra])


def algorithm(tmp_path, name, *extra):
    cfg = cfg_of(tmp_path, name, *extra)
    dataset = build_dataset(cfg)
    return build_algorithm(cfg, dataset, protocol_of(cfg), None), dataset


def reachable_sizes(scale, aspect, grid):
    """Every block size the rounding rule gives for some scale and aspect in their ranges."""
    steps = torch.linspace(0, 1, 201).tolist()
    return {block_size(scale[0] + a * (scale[1] - scale[0]), aspect[0] + b * (aspect[1] - aspect[0]), grid)
            for a in steps for b in steps}


def rectangle(indices, grid):
    """(top, left, height, width) of the patches at ``indices`` if they fill a rectangle, else None."""
    rows, cols = indices // grid[1], indices % grid[1]
    top, left = int(rows.min()), int(cols.min())
    h, w = int(rows.max()) - top + 1, int(cols.max()) - left + 1
    return (top, left, h, w) if h * w == len(indices) == len(set(indices.tolist())) else None


@pytest.mark.parametrize("grid", [(7, 7), (14, 14), (4, 4)])
def test_multi_block_masks_over_many_draws(grid):
    torch.manual_seed(0)
    masks = MultiBlockMasks(grid)
    patches = grid[0] * grid[1]
    target_sizes = reachable_sizes((0.15, 0.2), (0.75, 1.5), grid)
    context_sizes = reachable_sizes((0.85, 1.0), (1.0, 1.0), grid)
    seen_sizes, covered = set(), torch.zeros(patches, dtype=torch.bool)
    for _ in range(100):
        context, targets = masks(8)
        assert targets.shape[:2] == (4, 8) and context.shape[0] == 8
        assert context.shape[1] >= 4, "min_keep"
        sizes = set()
        for t in range(4):
            for i in range(8):
                box = rectangle(targets[t, i], grid)
                assert box is not None, "a target is one rectangular block"
                sizes.add(box[2:])
                covered[targets[t, i]] = True
        assert len(sizes) == 1, "one target size per batch"
        size = sizes.pop()
        assert size in target_sizes
        area = size[0] * size[1] / patches
        assert 0.15 - (size[0] + size[1] + 1) / patches <= area <= 0.2 + (size[0] + size[1] + 1) / patches
        seen_sizes.add(size)
        for i in range(8):
            kept = context[i]
            assert torch.equal(kept, kept.unique()), "sorted, no repeats"
            assert not set(kept.tolist()) & set(targets[:, i].flatten().tolist()), "context disjoint from targets"
            rows, cols = kept // grid[1], kept % grid[1]
            h, w = int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1
            assert any(h <= ch and w <= cw for ch, cw in context_sizes), "the context lies in one context block"
    assert covered.all(), "target blocks reach every patch"
    if grid != (4, 4):
        assert len(seen_sizes) > 1, "block sizes are drawn"


def test_masks_are_a_function_of_torchs_rng_state():
    masks = MultiBlockMasks((7, 7))
    torch.manual_seed(3)
    a = masks(4)
    torch.manual_seed(3)
    b = masks(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(masks(4)[1], a[1])


def test_min_keep_is_honoured_and_too_many_target_patches_refused():
    torch.manual_seed(0)
    masks = MultiBlockMasks((7, 7), min_keep=12, context_scale=(0.6, 0.7))
    assert all(masks(16)[0].shape[1] >= 12 for _ in range(20))
    with pytest.raises(HarnessError, match="num_targets: 9 target blocks of at least 6 patches and min_keep 4 need"):
        MultiBlockMasks((7, 7), num_targets=9)
    with pytest.raises(HarnessError, match="min_keep: 20 exceeds the context block's 16 patches"):
        MultiBlockMasks((7, 7), num_targets=1, context_scale=(0.3, 0.3), min_keep=20)


def test_random_masks_split_every_image_into_visible_and_hidden():
    torch.manual_seed(0)
    visible, hidden = random_masks(5, 16, 4)
    assert visible.shape == (5, 4) and hidden.shape == (5, 12)
    for v, h in zip(visible, hidden):
        assert sorted([*v.tolist(), *h.tolist()]) == list(range(16))
    assert not torch.equal(visible[0], visible[1]) or not torch.equal(visible[1], visible[2])


def test_sincos_positions_are_fixed_distinct_and_bounded():
    pos = sincos_positions(8, (3, 4))
    assert pos.shape == (12, 8) and pos.abs().max() <= 1
    assert len({tuple(p.tolist()) for p in pos}) == 12
    assert torch.equal(pos[0, :2], torch.tensor([0.0, 0.0])) and torch.equal(pos[0, 2:4], torch.ones(2))
    with pytest.raises(HarnessError, match="divisible by 4"):
        sincos_positions(6, (3, 3))


def test_ema_update_is_the_hand_computed_average_and_the_momentum_rises_linearly(tmp_path):
    algo, dataset = algorithm(tmp_path, "ijepa", "algorithm.hparams.ema_start=0.9", "algorithm.hparams.ema_end=1.0",
                              "algorithm.hparams.ema_steps=10")
    assert all(torch.equal(a, b) for a, b in zip(algo.target_encoder.parameters(), algo.featurizer.parameters()))
    assert not any(p.requires_grad for p in algo.target_encoder.parameters())
    assert [algo.momentum(s) for s in (0, 5, 10, 20)] == pytest.approx([0.9, 0.95, 1.0, 1.0])
    split = dataset.splits["train"]
    protocol = protocol_of(cfg_of(tmp_path, "ijepa"))
    for step in (0, 4):
        batch = protocol.batch(split, torch.arange(16), None)
        target_before = [p.clone() for p in algo.target_encoder.parameters()]
        algo.update(batch, step)
        m = algo.momentum(step)
        for t, before, online in zip(algo.target_encoder.parameters(), target_before, algo.featurizer.parameters()):
            assert torch.allclose(t, before * m + online * (1 - m), rtol=1e-6, atol=1e-7)  # up to float32 rounding
        assert not all(torch.equal(t, o) for t, o in zip(algo.target_encoder.parameters(),
                                                          algo.featurizer.parameters()))


def test_ijepa_targets_are_the_target_encoders_layer_normed_tokens_at_the_target_blocks(tmp_path, monkeypatch):
    algo, dataset = algorithm(tmp_path, "ijepa")
    x = dataset.splits["train"].inputs(torch.arange(4))
    torch.manual_seed(0)
    context, targets = algo.masks(4)
    seen = {}
    monkeypatch.setattr(F, "smooth_l1_loss", lambda pred, want: seen.setdefault("want", want).sum() * 0)
    algo.loss(x, context, targets)
    with torch.no_grad():
        h = F.layer_norm(algo.target_encoder.tokens(x), (16,))
    want = torch.stack([h[i, targets[t, i]] for t in range(len(targets)) for i in range(4)])
    assert torch.allclose(seen["want"], want, atol=1e-6)


def test_stop_noise_is_on_mask_tokens_only_in_training_and_is_a_map_of_gaussian_noise(tmp_path):
    algo, dataset = algorithm(tmp_path, "ijepa", "algorithm.hparams.stop_sigma=0.25")
    plain, _ = algorithm(tmp_path, "ijepa")
    predictor = algo.predictor
    plain.predictor.load_state_dict(predictor.state_dict())
    z = torch.randn(3, 5, 16)
    context = torch.tensor([[0, 1, 2, 3, 4], [2, 3, 5, 8, 9], [10, 11, 12, 13, 15]])
    targets = torch.tensor([[[6, 7], [0, 1], [4, 5]], [[14, 15], [12, 13], [8, 9]]])  # 2 blocks, 3 images
    k = context.shape[1]
    with torch.no_grad():
        clean = plain.predictor.train().inputs(z, context, targets)
        torch.manual_seed(1)
        noised = predictor.train().inputs(z, context, targets)
        assert torch.equal(noised[:, :k], clean[:, :k]), "context tokens are never noised"
        assert not torch.allclose(noised[:, k:], clean[:, k:], atol=1e-3), "mask tokens are"
        torch.manual_seed(1)
        n = torch.randn(2, 3, 2, 16) * 0.25
        want = clean[:, k:] + (n @ predictor.embed.weight.T).flatten(0, 1)
        assert torch.allclose(noised[:, k:], want, atol=1e-6), "ψ + A·n, A the context tokens' map"
        assert torch.equal(predictor.eval().inputs(z, context, targets), plain.predictor.eval().inputs(z, context,
                                                                                                      targets))
        torch.manual_seed(2)
        assert not torch.equal(predictor.train().inputs(z, context, targets), noised), "fresh noise per draw"


def test_mae_loss_reads_only_the_hidden_patches():
    from harness.algorithms.mae import masked_pixel_loss

    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8)
    patches = patchify(x, 2)
    assert patches.shape == (2, 16, 12) and torch.equal(patches[0, 5], x[0, :, 2:4, 2:4].permute(1, 2, 0).flatten())
    visible, hidden = random_masks(2, 16, 4)
    predicted = torch.randn(2, 12, 12)
    for norm_pix in (True, False):
        loss = masked_pixel_loss(predicted, patches, hidden, norm_pix)
        other = patches.clone()
        other[torch.arange(2)[:, None], visible] = torch.rand(2, 4, 12)
        assert torch.equal(masked_pixel_loss(predicted, other, hidden, norm_pix), loss)
        other[0, hidden[0, 0]] += 1 + torch.arange(12.0)
        assert masked_pixel_loss(predicted, other, hidden, norm_pix) != loss
    target = patches.gather(1, hidden[..., None].expand(-1, -1, 12))
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    assert torch.allclose(masked_pixel_loss(predicted, patches, hidden, True), ((predicted - target) ** 2).mean())


@pytest.mark.parametrize("name, extra", [
    ("ijepa", ["algorithm.hparams.ema_steps=40"]),
    ("ijepa", ["algorithm.hparams.ema_steps=40", "algorithm.hparams.stop_sigma=0.25"]),
    ("mae", []),
])
def test_each_loss_falls_on_a_toy_run(tmp_path, name, extra):
    algo, dataset = algorithm(tmp_path, name, "algorithm.hparams.lr=3e-3", *extra)
    batch = protocol_of(cfg_of(tmp_path, name)).batch(dataset.splits["train"], torch.arange(32), None)
    torch.manual_seed(0)
    losses = [float(algo.update(batch, step)["loss"]) for step in range(40)]
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses


class Interrupted(Exception):
    pass


def test_an_ijepa_run_with_stop_resumes_equal_to_an_uninterrupted_one(tmp_path, monkeypatch):
    from harness.algorithms.ijepa import IJEPA

    extra = ["algorithm.hparams.stop_sigma=0.25", "algorithm.hparams.ema_steps=6"]
    whole = train(cfg_of(tmp_path, "ijepa", f"run_dir={tmp_path / 'whole'}", *extra), progress=False)
    original = IJEPA.update

    def dies_at_step_3(self, batch, step):
        if step == 3:
            raise Interrupted
        return original(self, batch, step)

    cfg = cfg_of(tmp_path, "ijepa", f"run_dir={tmp_path / 'cut'}", *extra)
    with monkeypatch.context() as m:
        m.setattr(IJEPA, "update", dies_at_step_3)
        with pytest.raises(Interrupted):
            train(cfg, progress=False)
    train(cfg, progress=False)
    rows = lambda run: [(r["step"], r["train_logs"], r["metrics"]) for r in read_jsonl(run / "results.jsonl")]
    assert rows(tmp_path / "cut") == rows(whole) and len(rows(whole)) == 2


@pytest.mark.parametrize("overrides, message", [
    (["algorithm.name=ijepa", "algorithm.hparams.target_scale=[0,0.2]"],
     "each item of algorithm.hparams.target_scale must be a finite number > 0 and <= 1, got 0"),
    (["algorithm.name=ijepa", "algorithm.hparams.context_scale=[0.9,1.2]"],
     "each item of algorithm.hparams.context_scale must be a finite number > 0 and <= 1, got 1.2"),
    (["algorithm.name=ijepa", "algorithm.hparams.target_scale=[0.3,0.2]"],
     "algorithm hparam target_scale must be [low, high] with low <= high"),
    (["algorithm.name=ijepa", "algorithm.hparams.num_targets=20"], "algorithm hparam num_targets: 20 target blocks"),
    (["algorithm.name=ijepa", "backbone.options.patch_size=3"], "backbone option patch_size: 3 does not divide"),
    (["algorithm.name=mae", "backbone.options.patch_size=5"], "backbone option patch_size: 5 does not divide"),
    (["algorithm.name=ijepa", "algorithm.hparams.predictor_width=0"], "algorithm.hparams.predictor_width must be an integer >= 1, got 0"),
    (["algorithm.name=ijepa", "algorithm.hparams.predictor_width=-4"], "predictor_width must be an integer >= 1"),
    (["algorithm.name=ijepa", "algorithm.hparams.predictor_width=30"], "predictor_width must be a multiple of 4"),
    (["algorithm.name=mae", "algorithm.hparams.mask_ratio=1.0"], "algorithm.hparams.mask_ratio must be a finite number > 0 and < 1, got 1.0"),
    (["algorithm.name=mae", "algorithm.hparams.mask_ratio=0.99"], "mask_ratio: 0.99 leaves 0 of the 16 patches"),
    (["algorithm.name=simclr", "algorithm.hparams.stop_sigma=0.25"], "unknown hyperparameter of simclr "
     "(algorithm.hparams.stop_sigma) 'stop_sigma'"),
    (["algorithm.name=mae", "algorithm.hparams.stop_sigma=0.25"], "unknown hyperparameter of mae "
     "(algorithm.hparams.stop_sigma) 'stop_sigma'"),
    (["algorithm.name=ijepa", "backbone.name=cnn", "backbone.options={}"],
     "ijepa masks patch tokens: it needs a token backbone; accepted: vit, timm:vit_*"),
])
def test_bad_settings_exit_2_with_one_line_naming_the_option_and_write_nothing(overrides, message, tmp_path, capsys):
    code = main(["train", f"output_dir={tmp_path / 'runs'}", "steps=5", "device=cpu", *VIT, *overrides])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["simclr", "vicreg", "supervised_pretrain"])
def test_joint_embedding_methods_train_a_vit_unchanged(tmp_path, name):
    out = train(cfg_of(tmp_path, name, "algorithm.hparams.projector_width=16"), progress=False)
    rows = read_jsonl(out / "results.jsonl")
    assert [r["step"] for r in rows] == [3, 6] and math.isfinite(rows[-1]["train_logs"]["loss"])


def test_a_probe_trial_reads_every_block_of_an_ijepa_runs_context_encoder(tmp_path):
    cfg = cfg_of(tmp_path, "ijepa", "probe.tasks=[digits]", "probe.cs=[1.0]", "probe.knn_k=5")
    report = run_plan(Planner([resolved_run("probe", cfg)]), Local())  # its pretraining run first
    assert report.ok and report.ran == 2
    out = configs.run_dir(cfg)
    info = json.loads((out / "info.json").read_text())
    assert info["layers"] == ["block1", "block2", "output"]
    assert (out / "predictions" / "digits" / "block1.npz").exists()


@pytest.mark.parametrize("name", ["ijepa", "mae"])
def test_a_class_token_attends_but_is_neither_masked_nor_predicted(tmp_path, name):
    algo, dataset = algorithm(tmp_path, name, "backbone.options.class_token=true")
    batch = protocol_of(cfg_of(tmp_path, name)).batch(dataset.splits["train"], torch.arange(8), None)
    assert math.isfinite(float(algo.update(batch, 0)["loss"]))
    assert algo.probe_network().layer_names == ["block1", "block1_cls", "block2", "block2_cls", "output"]
