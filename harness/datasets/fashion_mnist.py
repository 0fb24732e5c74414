"""Fashion-MNIST as pretraining data: grey 14x14 garments whose training labels are hidden.

The training split holds ``n_train`` images; all but ``labelled`` of them are unlabelled
(``UNLABELLED``), so no objective can read their class. The ``labelled`` ones keep it for the
online probe alone (a linear head on detached features, ``harness.models.pretrain``), and
validation and test keep every class, for the probe's accuracy. Only the pretraining protocol
accepts the dataset (a worst-group method is refused before anything is written). The images are
those of ``colored_fashion_mnist`` (the same reader and subsets: every other pixel of the
28x28 originals, in [0, 1]), on one channel.
"""
from __future__ import annotations

import numpy as np
import torch
from harness.datasets.colored import FASHION_CLASSES, FASHION_SIZES, fashion_mnist_subsets

from harness.core.errors import HarnessError
from harness.core.options import Option
from harness.core.registry import DATASETS
from harness.data.dataset import UNLABELLED, Column, Schema, ShiftDataset, Split

SCHEMA = Schema((Column("class", "label", len(FASHION_CLASSES), FASHION_CLASSES),))


@DATASETS.register("fashion_mnist", options={
    **FASHION_SIZES,
    "labelled": Option(1000, int, "training images that keep their class, for the online probe only", low=0)})
def fashion_mnist(root: str = "", download: bool = False, seed: int = 0, n_train: int = 20000, n_val: int = 5000,
                  n_test: int = 10000, labelled: int = 1000) -> ShiftDataset:
    """Unlabelled Fashion-MNIST for pretraining (14x14 grey; the online probe's labelled slice only)."""
    if labelled > n_train:
        raise HarnessError(f"fashion_mnist: labelled ({labelled}) must be at most n_train ({n_train})")
    rng = np.random.RandomState(seed)
    splits = {}
    for name, (images, classes, ids) in fashion_mnist_subsets("fashion_mnist", root, download, n_train, n_val,
                                                              n_test, rng).items():
        if name == "train":  # the subsets are drawn at random: the first `labelled` are a random slice
            classes = np.where(np.arange(len(classes)) < labelled, classes, UNLABELLED)
        splits[name] = Split.of(torch.from_numpy(images[:, None]), ids, SCHEMA, {"class": classes})
    return ShiftDataset(splits=splits, input_shape=(1, 14, 14), default_backbone="cnn",
                        info={"source": "Fashion-MNIST", "labelled_train": labelled,
                              "unlabelled_train": n_train - labelled})
