"""Pretraining methods end to end on colored_digits with a tiny CNN: views, projector, the
pretraining protocol's monitoring (loss, RankMe, online probe per evaluation) and a probe trial
that reads backbone and projector layers of a SimCLR run."""
from __future__ import annotations

import json

import pytest
import torch

from harness.core import config as configs
from harness.core.errors import HarnessError
from harness.core.files import read_jsonl
from harness.models.backbones import backbone_factory
from harness.models.pretrain import Projected, make_views, projector
from harness.runs.run import build_algorithm, build_dataset, protocol_of, train
from harness.sweeps.launchers import Local
from harness.sweeps.planner import Planner, resolved_run, run_plan

CNN = ["backbone.name=cnn", "backbone.options.channels=[4,8,8]"]


def cfg_of(tmp_path, name, *extra):
    return configs.load(None, [f"output_dir={tmp_path / 'runs'}", f"algorithm.name={name}", "steps=6",
                               "eval_every=3", "device=cpu", "algorithm.hparams.batch_size=32", *CNN, *extra])


@pytest.mark.parametrize("preset", ["gaussian_noise", "crop_flip", "simclr", "none"])
def test_views_keep_the_shape_and_differ_per_example_and_per_draw(preset):
    x = torch.rand(4, 3, 8, 8).repeat(2, 1, 1, 1)  # examples 0-3 repeated as 4-7
    view = make_views(preset, (3, 8, 8), 0.1)
    torch.manual_seed(0)
    a, b = view(x), view(x)
    assert a.shape == x.shape
    if preset == "none":
        assert torch.equal(a, x)
    else:
        assert not torch.equal(a, b) and not torch.equal(a[:4], a[4:])


def test_views_that_crop_refuse_inputs_that_are_not_images():
    with pytest.raises(HarnessError, match="accepted here: gaussian_noise, none"):
        make_views("crop_flip", (2, 7), 0.1)


def test_probe_network_names_backbone_and_projector_layers_from_one_pass():
    net = Projected(backbone_factory("cnn", (2, 8, 8), {"channels": (4, 8)})(), projector(8, 3, 6)).eval()
    assert net.layer_dims == {"block1": 4, "block2": 8, "backbone": 8, "projector1": 6, "projector2": 6, "output": 6}
    x = torch.randn(5, 2, 8, 8)
    feats = net.intermediates(x, net.layer_names)
    assert torch.allclose(feats["output"], net(x), atol=1e-6)
    assert torch.allclose(feats["backbone"], net.backbone(x), atol=1e-6)
    assert set(net.intermediates(x, ["block1"])) == {"block1"}
    assert set(net.intermediates(x, ["projector1", "block2"])) == {"projector1", "block2"}


@pytest.mark.parametrize("name, extra, losses", [
    ("simclr", ["algorithm.hparams.views=crop_flip"], set()),
    ("simclr", ["algorithm.hparams.single_negative=true", "algorithm.hparams.projector_depth=0"], set()),
    ("vicreg", [], {"invariance", "variance", "covariance"}),
    ("directclr", [], set()),
    ("supervised_pretrain", ["algorithm.hparams.projector_depth=1"], set()),
])
def test_a_pretraining_run_logs_loss_rankme_and_the_online_probe_per_evaluation(tmp_path, name, extra, losses):
    out = train(cfg_of(tmp_path, name, *extra), progress=False)
    rows = read_jsonl(out / "results.jsonl")
    assert [r["step"] for r in rows] == [3, 6]
    for row in rows:
        assert {"loss", "probe_loss", *losses} <= set(row["train_logs"])
        for split in ("val", "test"):
            assert 0 <= row["metrics"][split]["probe_acc"] <= 1
            assert 1 <= row["metrics"][split]["rankme"] <= 8
    info = json.loads((out / "info.json").read_text())
    assert info["protocol"] == "pretraining" and info["parameters"]["backbone"] > 0


def test_directclr_has_no_projector_and_refuses_d0_wider_than_the_backbone(tmp_path):
    cfg = cfg_of(tmp_path, "directclr")
    dataset = build_dataset(cfg)
    algo = build_algorithm(cfg, dataset, protocol_of(cfg), None)
    assert len(algo.projector) == 0 and algo.probe_network() is algo.featurizer
    cfg = cfg_of(tmp_path, "directclr", "algorithm.hparams.d0=9")
    with pytest.raises(HarnessError, match="d0 = 9 exceeds"):
        build_algorithm(cfg, dataset, protocol_of(cfg), None)


def test_a_probe_trial_reads_a_simclr_run_at_backbone_and_projector_layers(tmp_path):
    cfg = cfg_of(tmp_path, "simclr", "algorithm.hparams.projector_depth=2", "algorithm.hparams.projector_width=16",
                 "probe.tasks=[digits]", "probe.cs=[1.0]", "probe.knn_k=5")
    report = run_plan(Planner([resolved_run("probe", cfg)]), Local())  # its pretraining run first
    assert report.ok and report.ran == 2
    out = configs.run_dir(cfg)
    info = json.loads((out / "info.json").read_text())
    assert info["layers"] == ["block1", "block2", "block3", "backbone", "projector1", "output"]
    assert info["layer_dims"]["projector1"] == 16
    assert (out / "predictions" / "digits" / "backbone.npz").exists()
