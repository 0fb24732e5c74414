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
