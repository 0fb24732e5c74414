"""Unlabelled Fashion-MNIST as pretraining data, read from tiny IDX files in the real on-disk
format (tests/conftest.py's tiny_fashion): training labels hidden except the online probe's
slice, refused by worst-group methods, and a few SimCLR steps on it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from harness.datasets.colored import load_fashion_mnist
from harness.datasets.fashion_mnist import fashion_mnist

from harness.core import config as configs
from harness.core.errors import HarnessError
from harness.core.files import load_arrays, read_jsonl
from harness.data.dataset import UNLABELLED
from harness.runs.run import train


def test_training_labels_are_hidden_but_for_the_probes_slice(tiny_fashion):
    ds = fashion_mnist(root=str(tiny_fashion), n_train=200, n_val=50, n_test=100, labelled=20)
    train_x, train_y, test_x, test_y = load_fashion_mnist(str(tiny_fashion))
    assert ds.input_shape == (1, 14, 14) and ds.num_classes == 10
    split = ds.splits["train"]
    ids, y = split.ids.numpy(), split.y.numpy()
    assert len(ids) == 200 and (y == UNLABELLED).sum() == 180 and ds.unlabelled == 180
    kept = y != UNLABELLED
    assert np.array_equal(y[kept], train_y[ids[kept]])  # the slice keeps its true classes
    assert np.allclose(split.x[0, 0].numpy(), train_x[ids[0]][::2, ::2] / 255.0)
    for name, classes, offset in (("val", train_y, 0), ("test", test_y, 300)):
        held_out = ds.splits[name]
        assert np.array_equal(held_out.y.numpy(), classes[held_out.ids.numpy() - offset])
    assert not set(ids) & set(ds.splits["val"].ids.tolist())


def test_more_labelled_images_than_training_images_are_refused(tiny_fashion):
    with pytest.raises(HarnessError, match=r"labelled \(201\) must be at most n_train \(200\)"):
        fashion_mnist(root=str(tiny_fashion), n_train=200, n_val=50, n_test=10, labelled=201)


def cfg_of(tmp_path, root, algorithm, *extra):
    sizes = [f"dataset.options.{k}={v}" for k, v in {"n_train": 200, "n_val": 50, "n_test": 50, "labelled": 40}.items()]
    return configs.load(None, [f"output_dir={tmp_path / 'runs'}", "dataset.name=fashion_mnist",
                               f"dataset.options.root={root}", *sizes, f"algorithm.name={algorithm}",
                               "steps=4", "eval_every=2", "device=cpu", "backbone.options.channels=[4,8]", *extra])


def test_a_worst_group_method_is_refused_before_anything_is_written(tmp_path, tiny_fashion):
    with pytest.raises(HarnessError, match="160 unlabelled examples.*accepted: an algorithm of the pretraining"):
        train(cfg_of(tmp_path, tiny_fashion, "erm"), progress=False)
    assert not (tmp_path / "runs").exists()


def test_simclr_pretrains_on_it_and_its_online_probe_scores_the_held_out_splits(tmp_path, tiny_fashion):
    out = train(cfg_of(tmp_path, tiny_fashion, "simclr", "algorithm.hparams.batch_size=32",
                       "algorithm.hparams.projector_depth=1"), progress=False)
    rows = read_jsonl(out / "results.jsonl")
    assert [r["step"] for r in rows] == [2, 4]
    assert all(np.isfinite(r["train_logs"]["loss"]) and r["train_logs"]["loss"] > 0 for r in rows)
    arrays = load_arrays(out / "predictions" / "step_0000004.npz")
    assert (arrays["train.y"] == UNLABELLED).sum() == 160
    labelled = arrays["train.y"] != UNLABELLED
    for split in ("train", "val", "test"):
        y, probe = arrays[f"{split}.y"], arrays[f"{split}.probe"]
        mask = labelled if split == "train" else np.ones(len(y), bool)
        assert rows[-1]["metrics"][split]["probe_acc"] == pytest.approx((probe[mask] == y[mask]).mean())
    info = json.loads((out / "info.json").read_text())
    assert info["protocol"] == "pretraining" and info["split_sizes"] == {"train": 200, "val": 50, "test": 50}
