"""Downstream tasks for transfer probes: a task is a registered dataset (with options) and the
metadata column whose values are its labels. Registered in ``TASKS`` (``harness list tasks``):

- ``fashion_classes``: the 10 Fashion-MNIST garments (colored_fashion_mnist's ``class``);
- ``digits``: the 10 scikit-learn digits (colored_digits' ``class``), another domain;
- ``colored_fashion_colour`` / ``colored_fashion_label``: colored_fashion_mnist's colour and its
  (noisy, binary) label;
- ``background_place`` / ``background_object``: background_fashion_mnist's background (land or
  water) and its garment;
- ``digits_colour`` / ``digits_label``: colored_digits' colour and label (embedded, no files).

Tasks that need different invariances (colour or shape, background or object), so that the best
layer to probe can differ between them. A task's inputs are fitted to the probed network's input
shape (:func:`fit_inputs`). dSprites' factors join once that dataset exists.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch.nn.functional as F

from harness.core.errors import HarnessError
from harness.core.registry import DATASETS, TASKS
from harness.data.dataset import ShiftDataset


@dataclass(frozen=True)
class Task:
    """A dataset name, its options and the metadata column that labels the task."""

    dataset: str
    label: str
    options: dict[str, Any] = field(default_factory=dict)


def register(name: str, dataset: str, label: str, description: str, **options: Any) -> None:
    TASKS.register(name, description=description)(Task(dataset, label, options))


register("fashion_classes", "colored_fashion_mnist", "class", "The 10 Fashion-MNIST garments (colored_fashion_mnist).")
register("digits", "colored_digits", "class", "The 10 scikit-learn digits, 8x8 (colored_digits): another domain.")
register("colored_fashion_colour", "colored_fashion_mnist", "colour", "colored_fashion_mnist's colour (red or green).")
register("colored_fashion_label", "colored_fashion_mnist", "y", "colored_fashion_mnist's noisy binary label.")
register("background_place", "background_fashion_mnist", "place", "background_fashion_mnist's background place.")
register("background_object", "background_fashion_mnist", "class", "background_fashion_mnist's garment (10 classes).")
register("digits_colour", "colored_digits", "colour", "colored_digits' colour (red or green); embedded.")
register("digits_label", "colored_digits", "y", "colored_digits' noisy binary label; embedded.")


def task_dataset(name: str, options: dict[str, Any] | None = None) -> tuple[ShiftDataset, str]:
    """The dataset of task ``name`` (the task's options, then ``options`` over them) and its
    label column; an unknown task or column is a HarnessError naming the accepted ones."""
    task: Task = TASKS.get(name).obj
    dataset = DATASETS.get(task.dataset).obj(**{**task.options, **(options or {})})
    dataset.schema.index(task.label)
    return dataset, task.label


def labels(dataset: ShiftDataset, column: str) -> dict[str, np.ndarray]:
    """The task's label of every example, per split."""
    return {name: split.column(column).cpu().numpy() for name, split in dataset.splits.items()}


def fit_inputs(dataset: ShiftDataset, shape: tuple[int, ...]) -> ShiftDataset:
    """The dataset with images fitted to a network's input shape (C, H, W): resized bilinearly;
    a grey image repeated to C channels; fewer channels than C kept as the first ones, the rest
    zero (colored datasets' red and green become RGB's); more than C made grey (their mean) and
    repeated. Unchanged when the shapes agree; anything else is a HarnessError."""
    shape = tuple(shape)
    if tuple(dataset.input_shape) == shape:
        return dataset
    if len(shape) != 3 or len(dataset.input_shape) != 3:
        raise HarnessError(f"task inputs of shape {tuple(dataset.input_shape)} cannot be fitted to a network "
                           f"that reads {shape}: only images (channels, height, width) are resized")
    splits = {}
    for name, split in dataset.splits.items():
        if not split.in_memory:
            raise HarnessError(f"task inputs of shape {tuple(dataset.input_shape)} are read from disk; resizing "
                               f"them to {shape} is done for datasets held in memory only")
        x = F.interpolate(split.x.float(), size=shape[1:], mode="bilinear", align_corners=False)
        if x.shape[1] == 1 or x.shape[1] > shape[0]:
            x = x.mean(1, keepdim=True).expand(-1, shape[0], -1, -1)
        elif x.shape[1] < shape[0]:
            x = F.pad(x, (0, 0, 0, 0, 0, shape[0] - x.shape[1]))
        splits[name] = dataclasses.replace(split, x=x.contiguous())
    info = {**dataset.info, "fitted_to": list(shape)}
    return dataclasses.replace(dataset, splits=splits, input_shape=shape, info=info)
