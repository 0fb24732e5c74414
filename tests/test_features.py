"""Frozen-feature caching: features equal the frozen backbone's, are stored by id, reused, and
never reused when what they depend on changes."""
from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest
import torch
import wilds_fixtures as F
from harness.datasets.wilds import image_transform

from harness.commands import features as features_command
from harness.core import config as configs
from harness.core.errors import HarnessError
from harness.core.registry import DATASETS
from harness.data.dataset import Column, Schema, ShiftDataset, Split
from harness.models.backbones import backbone_factory
from harness.runs import features


def tiny_images(n_per_split: int = 10, seed: int = 0) -> ShiftDataset:
    gen = torch.Generator().manual_seed(seed)
    schema = Schema((Column("y", "label", 2), Column("attribute", "attribute", 2, ("a", "b"))), attribute="attribute")
    splits = {}
    for k, name in enumerate(("train", "val", "test")):
        y = torch.randint(0, 2, (n_per_split,), generator=gen)
        splits[name] = Split.of(torch.rand(n_per_split, 3, 8, 8, generator=gen), torch.arange(n_per_split) + 100 * k,
                                schema, {"y": y, "attribute": 1 - y})
    return ShiftDataset(splits, input_shape=(3, 8, 8), info={"name": "tiny"})


def frozen(name: str, shape: tuple[int, ...], seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return backbone_factory(name, shape, {})().eval()


@pytest.fixture(scope="module")
def wroot(tmp_path_factory):
    path = tmp_path_factory.mktemp("wilds")
    F.make_waterbirds(path)
    return path


def waterbirds(root, **options):
    return DATASETS.get("waterbirds").obj(root=str(root), **options)


def test_features_are_the_frozen_backbone_outputs_and_are_reused(tmp_path, monkeypatch):
    data = tiny_images()
    out = features.apply({"backbone": "cnn", "batch_size": 3}, data, tmp_path)
    net = frozen("cnn", (3, 8, 8))
    with torch.no_grad():
        for name, split in data.splits.items():
            assert torch.allclose(out.splits[name].x, net(split.x), atol=1e-5)
            assert torch.equal(out.splits[name].ids, split.ids) and torch.equal(out.splits[name].attr, split.attr)
    assert out.input_shape == (32,) and out.default_backbone == "identity"
    assert out.info["name"] == "tiny" and out.info["features"]["dim"] == 32

    def no_encoding(*args, **kwargs):
        raise AssertionError("a matching cache must be reused")

    monkeypatch.setattr(features, "encode", no_encoding)
    again = features.apply({"backbone": "cnn", "batch_size": 3}, data, tmp_path)
    assert again.info["features"]["key"] == out.info["features"]["key"]
    assert torch.equal(again.splits["test"].x, out.splits["test"].x)
    meta = json.loads((tmp_path / out.info["features"]["key"] / "meta.json").read_text())
    assert meta["backbone"] == "cnn" and meta["dataset"]["name"] == "tiny"


def test_cache_files_hold_ids_and_features_and_are_matched_by_id(tmp_path):
    data = tiny_images()
    out = features.apply({"backbone": "mlp", "options": {"width": 16, "depth": 1}}, data, tmp_path)
    path = features.cache_files(out)["val"]
    with np.load(path, allow_pickle=False) as stored:
        assert stored["ids"].tolist() == data.splits["val"].ids.tolist()
        assert stored["features"].shape == (10, 16) and stored["features"].dtype == np.float32
    ids = data.splits["val"].ids.numpy()
    shuffled = ids[[3, 0, 9, 5]]
    assert np.array_equal(features._cached(path, shuffled), out.splits["val"].x.numpy()[[3, 0, 9, 5]])
    assert features._cached(path, np.array([ids[0], 12345])) is None
    # a file that lacks an id of its split is encoded again, not trusted
    features._store(path, ids[:4], np.zeros((4, 16), np.float32))
    redone = features.apply({"backbone": "mlp", "options": {"width": 16, "depth": 1}}, data, tmp_path)
    assert torch.equal(redone.splits["val"].x, out.splits["val"].x)
    assert redone.splits["val"].x.abs().sum() > 0


def test_key_covers_transform_metadata_weights_and_data(wroot, tmp_path):
    spec = {"backbone": "cnn", "options": {"channels": [4, 4]}}
    base = features.apply(spec, waterbirds(wroot, image_size=8), tmp_path)
    key = base.info["features"]["key"]
    assert features.apply(spec, waterbirds(wroot, image_size=8), tmp_path).info["features"]["key"] == key
    other_transform = features.apply(spec, waterbirds(wroot, image_size=8, transform_model="resnet50.tv_in1k"),
                                     tmp_path)
    assert other_transform.info["features"]["key"] != key  # same size, another interpolation
    # the same options with another transform (say, a timm upgrade changed its defaults)
    data = waterbirds(wroot, image_size=8)
    for split in data.splits.values():
        split.x.subset.transform = image_transform("resnet50.tv_in1k", 8)[0]
    swapped = features.apply(spec, data, tmp_path).info["features"]["key"]
    assert swapped not in (key, other_transform.info["features"]["key"])
    other_seed = features.apply({**spec, "seed": 1}, waterbirds(wroot, image_size=8), tmp_path)
    assert other_seed.info["features"]["key"] != key
    assert not torch.allclose(other_seed.splits["train"].x, base.splits["train"].x)
    # the same files with edited metadata (one background swapped) are another dataset version
    edited = tmp_path / "edited"
    table = F.make_waterbirds(edited)
    table.loc[0, "place"] = 1 - table.loc[0, "place"]
    table.to_csv(edited / "waterbirds_v1.0" / "metadata.csv", index=False)
    assert features.apply(spec, waterbirds(edited, image_size=8), tmp_path).info["features"]["key"] != key
    # in-memory data without a fingerprint: keyed by its content
    a = features.apply(spec, tiny_images(seed=0), tmp_path).info["features"]["key"]
    assert features.apply(spec, tiny_images(seed=1), tmp_path).info["features"]["key"] != a


def test_timm_backbone_on_wilds_images(wroot, tmp_path):
    data = waterbirds(wroot, image_size=16)
    out = features.apply({"backbone": "timm:resnet18", "batch_size": 8}, data, tmp_path)
    test = data.splits["test"]
    assert out.splits["test"].x.shape == (len(test), 512) and out.input_shape == (512,)
    net = frozen("timm:resnet18", (3, 16, 16))
    with torch.no_grad():
        direct = net(test.inputs(torch.arange(4)))
    assert torch.allclose(out.splits["test"].x[:4], direct, atol=1e-4)
    assert out.splits["test"].y.tolist() == test.y.tolist()


def test_bad_specs_and_unfingerprinted_disk_data_are_clear_errors(tmp_path):
    data = tiny_images()
    with pytest.raises(HarnessError, match="unknown features key 'features.batchsize'"):
        features.apply({"backbone": "cnn", "batchsize": 3}, data, tmp_path)
    with pytest.raises(HarnessError, match="features.backbone is required"):
        features.apply({}, data, tmp_path)
    with pytest.raises(HarnessError, match="features.batch_size must be an integer >= 1, got '64'"):
        features.apply({"backbone": "cnn", "batch_size": "64"}, data, tmp_path)
    with pytest.raises(HarnessError, match="features.num_workers must be an integer >= 0, got -1"):
        features.apply({"backbone": "cnn", "num_workers": -1}, data, tmp_path)
    with pytest.raises(HarnessError, match="features.options do not fit backbone 'cnn'.*'width'"):
        features.apply({"backbone": "cnn", "options": {"width": 3}}, data, tmp_path)
    with pytest.raises(HarnessError, match="'cnn' is not a timm:<model> backbone"):
        features.apply({"backbone": "cnn", "pretrained": True}, data, tmp_path)
    test = data.splits["test"]
    data.splits["test"] = dataclasses.replace(test, x=torch.utils.data.TensorDataset(test.x))
    with pytest.raises(HarnessError, match="reads its test inputs from disk but declares no"):
        features.apply({"backbone": "cnn"}, data, tmp_path)


def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    features_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["features", *argv])
    return args.func(args)


def test_features_command_prints_cache_and_bytes_per_example(wroot, tmp_path, capsys):
    argv = ["dataset.name=waterbirds", f"dataset.options.root={wroot}", "dataset.options.image_size=8",
            "features.backbone=cnn", "features.options.channels=[8]", f"output_dir={tmp_path}"]
    assert run_command(argv) == 0
    text = capsys.readouterr().out
    key_dir = next((tmp_path / "feature_cache").iterdir())
    assert f"cache: {key_dir}" in text and "8 features per example" in text
    train = key_dir / "train.npz"
    n = sum(F.WATERBIRDS_COUNTS[0].values())
    row = next(line for line in text.splitlines() if line.startswith("train"))
    assert row.split()[1:3] == [str(n), f"{train.stat().st_size / n:.0f}"]
    with pytest.raises(HarnessError, match="features is not set"):
        run_command(argv[:3])


def test_a_head_trains_on_cached_features_through_the_run_loop(wroot, tmp_path):
    from harness.runs.run import train

    cfg = configs.resolve({
        "dataset": {"name": "waterbirds", "options": {"root": str(wroot), "image_size": 8}},
        "features": {"backbone": "cnn", "options": {"channels": [8, 8]}},
        "backbone": {"name": "mlp", "options": {"depth": 0}},
        "algorithm": {"name": "erm", "hparams": {"batch_size": 4, "lr": 0.05}},
        "steps": 6, "eval_every": 3, "output_dir": str(tmp_path / "runs"),
    })
    out = train(cfg, progress=False)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    test = rows[-1]["metrics"]["test"]
    assert test["n"] == sum(F.WATERBIRDS_COUNTS[2].values()) and len(test["group_acc"]) == 4
    assert "adjusted_avg_acc" in test
    with np.load(out / "predictions" / "step_0000006.npz", allow_pickle=False) as pred:
        assert pred["test.ids"].tolist() == waterbirds(wroot, image_size=8).splits["test"].ids.tolist()
    assert (tmp_path / "runs" / "feature_cache").is_dir() and (out / "done").exists()


def test_a_layer_is_cached_under_its_own_key_and_the_default_key_is_unchanged(tmp_path):
    import hashlib

    data = tiny_images()
    spec = {"backbone": "cnn", "options": {"channels": [4, 6, 8]}}
    output = features.apply(spec, data, tmp_path)
    # the key of output features is the hash it was before layers existed
    net = features.frozen_backbone("cnn", (3, 8, 8), {"channels": [4, 6, 8]}, 0)
    before = {"format": 1, "backbone": "cnn", "options": {"channels": [4, 6, 8]}, "pretrained": False,
              "weights": features.weights_hash(net), "dataset": features.dataset_identity(data)}
    assert output.info["features"]["key"] == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert features.apply({**spec, "layer": "output"}, data, tmp_path).info["features"]["key"] == \
        output.info["features"]["key"]
    block2 = features.apply({**spec, "layer": "block2"}, data, tmp_path)
    block3 = features.apply({**spec, "layer": "block3"}, data, tmp_path)
    keys = {d.info["features"]["key"] for d in (output, block2, block3)}
    assert len(keys) == 3
    assert block2.input_shape == (6,) and block2.info["features"]["layer"] == "block2"
    with torch.no_grad():
        assert torch.allclose(block2.splits["val"].x, net[1](net[0](data.splits["val"].x)).mean((2, 3)), atol=1e-5)
    meta = json.loads((tmp_path / block2.info["features"]["key"] / "meta.json").read_text())
    assert meta["layer"] == "block2" and "layer" not in json.loads(
        (tmp_path / output.info["features"]["key"] / "meta.json").read_text())


def test_an_unknown_layer_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(HarnessError, match="unknown features.layer 'layer3'; accepted: block1, block2, output"):
        features.apply({"backbone": "cnn", "options": {"channels": [4, 6]}, "layer": "layer3"}, tiny_images(),
                       tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_run_hashes_cover_a_layer_but_not_the_default_one(tiny_cfg):
    base = tiny_cfg("features.backbone=cnn")
    assert "layer" not in base["features"]
    same = tiny_cfg("features.backbone=cnn", "features.layer=output")
    assert configs.config_hash(same) == configs.config_hash(base)
    assert configs.config_hash(tiny_cfg("features.backbone=cnn", "features.layer=block3")) != configs.config_hash(base)
    fast = tiny_cfg("features.backbone=cnn", "features.layer=block3", "features.batch_size=7")
    assert configs.config_hash(fast) == configs.config_hash(tiny_cfg("features.backbone=cnn", "features.layer=block3"))


def test_a_head_trains_on_a_cached_intermediate_layer(tiny_cfg):
    from harness.core.files import load_torch, read_jsonl
    from harness.runs.run import train

    cfg = tiny_cfg("features.backbone=cnn", "features.options.channels=[4,6,8]", "features.layer=block2",
                   "backbone.name=mlp", "backbone.options={depth: 0}", "steps=20", "eval_every=10")
    out = train(cfg, progress=False)
    rows = read_jsonl(out / "results.jsonl")
    assert [r["step"] for r in rows] == [10, 20] and rows[-1]["train_logs"]["loss"] > 0
    cache = json.loads((out / "info.json").read_text())["dataset_info"]["features"]
    assert cache["layer"] == "block2" and cache["dim"] == 6  # block2's channels, not the output's 8
    head = load_torch(out / "checkpoint.pt")["algorithm"]["model"]["classifier.weight"]
    assert head.shape == (2, 6)
