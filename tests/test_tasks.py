"""Downstream tasks: a registered dataset and a label column; inputs fitted to a network's shape."""
import dataclasses

import pytest
import torch

from harness.core.errors import HarnessError
from harness.data.tasks import fit_inputs, labels, task_dataset


def test_digits_task_labels_are_the_source_digits():
    dataset, column = task_dataset("digits")
    assert column == "class"
    y = labels(dataset, column)
    assert set(y["train"].tolist()) == set(range(10))
    assert len(y["test"]) == len(dataset.splits["test"])


def test_task_options_override_the_dataset_defaults(tiny_fashion):
    dataset, column = task_dataset("background_place", {"root": str(tiny_fashion), "n_train": 50, "n_val": 20,
                                                        "n_test": 30})
    assert column == "place" and len(dataset.splits["train"]) == 50 and dataset.input_shape == (3, 14, 14)


def test_unknown_task_names_the_accepted_ones():
    with pytest.raises(HarnessError, match="unknown downstream task 'nope'.*digits_colour"):
        task_dataset("nope")


def test_fit_inputs_resizes_keeps_colour_channels_and_makes_grey_only_when_there_are_too_many():
    dataset, _ = task_dataset("digits_colour")
    same = fit_inputs(dataset, (2, 8, 8))
    assert same is dataset
    bigger = fit_inputs(dataset, (2, 14, 14))
    x = bigger.splits["train"].x
    assert x.shape[1:] == (2, 14, 14) and bigger.input_shape == (2, 14, 14)
    # the colour survives a resize: the image stays in its colour's channel
    colour = (x[:, 1].abs().sum((1, 2)) > 0).long()
    assert torch.equal(colour, dataset.splits["train"].column("colour"))
    original = dataset.splits["val"].x
    three = fit_inputs(dataset, (3, 8, 8)).splits["val"].x  # red, green → R, G; B empty
    assert torch.equal(three[:, :2], original) and (three[:, 2] == 0).all()
    one = fit_inputs(dataset, (1, 8, 8)).splits["val"].x
    assert torch.allclose(one[:, 0], original.mean(1))
    grey = dataclasses.replace(dataset, splits={"val": dataclasses.replace(dataset.splits["val"], x=one)},
                               input_shape=(1, 8, 8))
    tiled = fit_inputs(grey, (3, 8, 8)).splits["val"].x
    assert torch.equal(tiled[:, 0], one[:, 0]) and torch.equal(tiled[:, 2], one[:, 0])


def test_fit_inputs_refuses_what_is_not_an_image():
    dataset, _ = task_dataset("digits_label")
    with pytest.raises(HarnessError, match=r"cannot be fitted to a network that reads \(128,\)"):
        fit_inputs(dataset, (128,))


DSPRITES_TASKS = {"dsprites_shape": "shape", "dsprites_scale": "scale", "dsprites_orientation": "orientation",
                  "dsprites_posx": "posX", "dsprites_posy": "posY"}


def test_dsprites_factor_tasks_are_listed_small_and_have_no_shift_split(capsys):
    from harness.cli import main

    assert main(["list", "tasks"]) == 0
    listed = capsys.readouterr().out
    for name, column in DSPRITES_TASKS.items():
        assert f"procedural_dsprites.{column}" in listed and name in listed
    dataset, column = task_dataset("dsprites_scale")
    assert column == "scale" and list(dataset.splits) == ["train", "val", "test"]
    assert {s: len(x) for s, x in dataset.splits.items()} == {"train": 3000, "val": 1000, "test": 2000}
    assert set(labels(dataset, column)["train"].tolist()) == set(range(6))


def test_dsprites_images_drawn_on_demand_are_fitted_with_their_mass_kept():
    """64x64 sprites read into memory and shrunk to 14x14 with antialiasing: a bigger sprite keeps
    more ink (no sprite vanishes between the sampled pixels)."""
    dataset, _ = task_dataset("dsprites_scale", {"n_train": 60, "n_val": 10, "n_test": 10})
    assert not dataset.splits["train"].in_memory
    fitted = fit_inputs(dataset, (3, 14, 14))
    x, scale = fitted.splits["train"].x, dataset.splits["train"].column("scale")
    assert x.shape == (60, 3, 14, 14) and torch.equal(x[:, 0], x[:, 2])
    original = dataset.splits["train"].inputs(torch.arange(60)).sum((1, 2, 3))
    shrunk = x[:, 0].sum((1, 2)) * (64 / 14) ** 2
    assert torch.allclose(shrunk, original, rtol=0.05)
    assert (x[:, 0].sum((1, 2)) > 0).all()
    assert x[scale == 5, 0].sum((1, 2)).mean() > 2 * x[scale == 0, 0].sum((1, 2)).mean()


def test_fitting_more_inputs_than_memory_allows_is_refused_naming_the_split(monkeypatch):
    from harness.data import tasks

    dataset, _ = task_dataset("dsprites_shape", {"n_train": 30, "n_val": 5, "n_test": 5})
    monkeypatch.setattr(tasks, "MAX_READ", 20)
    with pytest.raises(HarnessError, match="at most 20 per split; the task's train split has 30"):
        fit_inputs(dataset, (1, 14, 14))


def test_dsprites_tasks_are_probed_above_chance_by_a_tiny_random_network(tmp_path, tiny_fashion):
    """A random CNN that reads background_fashion_mnist's 3x14x14 inputs, probed on sprites fitted to them."""
    from harness.core import config as configs
    from harness.reports import collect
    from harness.runs import probe as probes

    options = {"n_train": 400, "n_val": 200, "n_test": 300}
    cfg = configs.load(None, [f"output_dir={tmp_path}", "device=cpu", "backbone.name=cnn",
                              "backbone.options.channels=[8,8]", "probe.init=random", "probe.cs=[0.1,1.0]",
                              "probe.knn_k=5", "dataset.name=background_fashion_mnist",
                              f"dataset.options={{root: '{tiny_fashion}', n_train: 50, n_val: 20, n_test: 20}}",
                              f"probe.tasks=[{{name: dsprites_shape, options: {options}}}, "
                              f"{{name: dsprites_scale, options: {options}}}]"])
    run = probes.probe(cfg, progress=False)
    frame = collect.load_runs([run])
    best = frame.groupby("dataset")["test.probe_acc"].max()
    assert best["dsprites_scale"] > 0.25  # chance: 1/6 (300 test points: s.e. 0.02)
    assert best["dsprites_shape"] > 0.45  # chance: 1/3
