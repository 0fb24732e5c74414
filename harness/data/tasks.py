"""Downstream tasks for transfer probes: a task is a registered dataset (with options) and the
metadata column whose values are its labels. Registered in ``TASKS`` (``harness list tasks``):

- ``fashion_classes``: the 10 Fashion-MNIST garments (colored_fashion_mnist's ``class``);
- ``digits``: the 10 scikit-learn digits (colored_digits' ``class``), another domain;
- ``colored_fashion_colour`` / ``colored_fashion_label``: colored_fashion_mnist's colour and its
  (noisy, binary) label;
- ``background_place`` / ``background_object``: background_fashion_mnist's background (land or
  water) and its garment;
- ``digits_colour`` / ``digits_label``: colored_digits' colour and label (embedded, no files);
- ``dsprites_shape``, ``dsprites_scale``, ``dsprites_orientation``, ``dsprites_posx``,
  ``dsprites_posy``: one factor of procedural_dsprites (embedded), independent factors, small
  splits by default.

Tasks that need different invariances (colour or shape, background or object, a sprite's shape
or its position), so that the best layer to probe can differ between them. A task has the
splits train, val and test (others, such as dSprites' ``shift``, are left out). A task's inputs
are fitted to the probed network's input shape (:func:`fit_inputs`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.core.errors import HarnessError
from harness.core.registry import DATASETS, TASKS
from harness.data.dataset import ShiftDataset, Split, chunks


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
# dSprites' splits: small by default (the task needs a few thousand probe points, not the grid);
# the dataset's fourth split (shift) is not a task split, so it is drawn with one example.
DSPRITES = {"n_train": 3000, "n_val": 1000, "n_test": 2000, "n_shift": 1}
for factor, text in (("shape", "square, ellipse or heart (3)"), ("scale", "6 sizes"),
                     ("orientation", "40 rotations in [0, 2pi]"), ("posX", "32 horizontal positions"),
                     ("posY", "32 vertical positions")):
    register(f"dsprites_{factor.lower()}", "procedural_dsprites", factor,
             f"dSprites' {factor}: {text}; procedural_dsprites, 64x64, embedded.", **DSPRITES)

TASK_SPLITS = ("train", "val", "test")
# Inputs drawn on demand (not held in memory) are read into memory to be resized, up to this many per split.
MAX_READ = 50_000


def task_dataset(name: str, options: dict[str, Any] | None = None) -> tuple[ShiftDataset, str]:
    """The dataset of task ``name`` (the task's options, then ``options`` over them) and its
    label column; an unknown task or column is a HarnessError naming the accepted ones."""
    task: Task = TASKS.get(name).obj
    dataset = DATASETS.get(task.dataset).obj(**{**task.options, **(options or {})})
    dataset.schema.index(task.label)
    splits = {s: dataset.splits[s] for s in TASK_SPLITS if s in dataset.splits}
    return dataclasses.replace(dataset, splits=splits), task.label


def labels(dataset: ShiftDataset, column: str) -> dict[str, np.ndarray]:
    """The task's label of every example, per split."""
    return {name: split.column(column).cpu().numpy() for name, split in dataset.splits.items()}


def fit_inputs(dataset: ShiftDataset, shape: tuple[int, ...]) -> ShiftDataset:
    """The dataset with images fitted to a network's input shape (C, H, W): resized bilinearly
    (antialiased when shrinking, so that thin shapes such as dSprites' survive 64 → 14); a grey
    image repeated to C channels; fewer channels than C kept as the first ones, the rest zero
    (colored datasets' red and green become RGB's); more than C made grey (their mean) and
    repeated. Inputs drawn on demand are read into memory first (up to ``MAX_READ`` per split).
    Unchanged when the shapes agree; anything else is a HarnessError."""
    shape = tuple(shape)
    if tuple(dataset.input_shape) == shape:
        return dataset
    if len(shape) != 3 or len(dataset.input_shape) != 3:
        raise HarnessError(f"task inputs of shape {tuple(dataset.input_shape)} cannot be fitted to a network "
                           f"that reads {shape}: only images (channels, height, width) are resized")
    splits = {}
    for name, split in dataset.splits.items():
        if not split.in_memory and len(split) > MAX_READ:
            raise HarnessError(f"task inputs of shape {tuple(dataset.input_shape)} are not held in memory; resizing "
                               f"them to {shape} reads them into memory, at most {MAX_READ} per split; the task's "
                               f"{name} split has {len(split)} (set a smaller split size in the task's options)")
        x = _read_all(split).float()
        shrink = x.shape[2] > shape[1] or x.shape[3] > shape[2]
        x = F.interpolate(x, size=shape[1:], mode="bilinear", align_corners=False, antialias=shrink)
        if x.shape[1] == 1 or x.shape[1] > shape[0]:
            x = x.mean(1, keepdim=True).expand(-1, shape[0], -1, -1)
        elif x.shape[1] < shape[0]:
            x = F.pad(x, (0, 0, 0, 0, 0, shape[0] - x.shape[1]))
        splits[name] = dataclasses.replace(split, x=x.contiguous())
    info = {**dataset.info, "fitted_to": list(shape)}
    return dataclasses.replace(dataset, splits=splits, input_shape=shape, info=info)


def _read_all(split: Split, chunk: int = 1000) -> torch.Tensor:
    if split.in_memory:
        return split.x
    return torch.cat([split.inputs(idx) for idx in chunks(len(split), chunk)])
