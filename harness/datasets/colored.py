"""Colored datasets: the ColoredMNIST recipe (Arjovsky et al., 2019) on small real images.

Recipe, per example: the binary label is ``y = class < 5``, flipped with probability 0.25 (so
the shape predicts y at best 75% of the time); the colour is ``y`` flipped with probability
``p_env``, and the grey image is written into the channel of its colour (two channels). In the
training environments colour agrees with the label 90% and 80% of the time (p_env 0.1 and 0.2,
alternating examples), validation is drawn from the training distribution, and the test set has
colour agreeing 10% of the time. Metadata: ``y`` (label), ``colour`` (the annotated
attribute) and ``class`` (the source image's digit or garment, which transfer tasks probe);
groups = (y, colour).

``colored_digits`` uses scikit-learn's bundled 8x8 digits (no download, 1,797 images);
``colored_fashion_mnist`` uses real Fashion-MNIST, downsampled to 14x14 as DomainBed does.
"""
from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np
import torch

from harness.core.errors import HarnessError
from harness.core.options import Option
from harness.core.registry import DATASETS
from harness.data.dataset import Column, Schema, ShiftDataset, Split

LABEL_NOISE = 0.25
TRAIN_FLIPS = (0.1, 0.2)  # colour disagrees with the label: environments of 90% and 80% agreement
TEST_FLIP = 0.9           # 10% agreement
COLOURS = ("red", "green")
CLASSES = ("class>=5", "class<5")
DIGITS = tuple(str(d) for d in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def source_class(names: tuple[str, ...]) -> Column:
    """The source image's original class (digit, garment): a column that transfer tasks probe."""
    return Column("class", "attribute", len(names), names)


def colored_schema(class_names: tuple[str, ...]) -> Schema:
    return Schema((Column("y", "label", 2, CLASSES), Column("colour", "attribute", 2, COLOURS),
                   source_class(class_names)), attribute="colour")
DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def colorize(images: np.ndarray, classes: np.ndarray, flips: np.ndarray,
             rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the recipe: images (n, h, w) in [0, 1], original classes, per-example colour flip
    probabilities. Returns inputs (n, 2, h, w), noisy binary labels and colours."""
    y = (classes < 5).astype(np.int64)
    y ^= (rng.rand(len(y)) < LABEL_NOISE).astype(np.int64)
    colour = y ^ (rng.rand(len(y)) < flips).astype(np.int64)
    x = np.zeros((len(y), 2, *images.shape[1:]), dtype=np.float32)
    x[np.arange(len(y)), colour] = images
    return x, y, colour


def _split(images: np.ndarray, classes: np.ndarray, ids: np.ndarray, flips: np.ndarray,
           rng: np.random.RandomState, schema: Schema) -> Split:
    x, y, colour = colorize(images, classes, flips, rng)
    return Split.of(torch.from_numpy(x), ids, schema, {"y": y, "colour": colour, "class": classes})


def _training_flips(n: int) -> np.ndarray:
    """Alternate the two training environments over examples."""
    return np.array(TRAIN_FLIPS)[np.arange(n) % len(TRAIN_FLIPS)]


def _dataset(splits: dict[str, Split], shape: tuple[int, ...], name: str, backbone: str) -> ShiftDataset:
    return ShiftDataset(
        splits=splits, input_shape=(2, *shape), default_backbone=backbone,
        info={"recipe": "colored", "source": name, "label_noise": LABEL_NOISE,
              "train_colour_agreement": [1 - f for f in TRAIN_FLIPS], "test_colour_agreement": 1 - TEST_FLIP},
    )


# What the Fashion-MNIST recipes accept for their seed and split sizes.
FASHION_SIZES = {"seed": Option(0, int, low=0), "n_train": Option(20000, int, low=1),
                 "n_val": Option(5000, int, low=1), "n_test": Option(10000, int, low=1)}


@DATASETS.register("colored_digits", options={
    "seed": Option(0, int, low=0), "test_fraction": Option(1 / 3, float, low=0, low_open=True, high=1, high_open=True),
    "val_fraction": Option(0.2, float, low=0, low_open=True, high=1, high_open=True)})
def colored_digits(seed: int = 0, test_fraction: float = 1 / 3, val_fraction: float = 0.2) -> ShiftDataset:
    """ColoredMNIST recipe on scikit-learn's 8x8 digits (embedded, no download)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(images))
    n_test = int(round(len(order) * test_fraction))
    rest = order[n_test:]
    n_val = int(round(len(rest) * val_fraction))
    parts = {"test": order[:n_test], "val": rest[:n_val], "train": rest[n_val:]}
    splits = {}
    for name in ("train", "val", "test"):
        idx = parts[name]
        flips = np.full(len(idx), TEST_FLIP) if name == "test" else _training_flips(len(idx))
        splits[name] = _split(images[idx], digits.target[idx], idx, flips, rng, colored_schema(DIGITS))
    return _dataset(splits, (8, 8), "sklearn digits", "mlp")


@DATASETS.register("colored_fashion_mnist", options=FASHION_SIZES)
def colored_fashion_mnist(root: str = "", download: bool = False, seed: int = 0, n_train: int = 20000,
                          n_val: int = 5000, n_test: int = 10000) -> ShiftDataset:
    """ColoredMNIST recipe on real Fashion-MNIST at 14x14 (needs the files; see ``root``).

    ``root`` holds torchvision's layout (``FashionMNIST/raw/``) or the four gzipped IDX files as
    Debian's ``dataset-fashion-mnist`` package installs them; empty means ``$HARNESS_DATA_ROOT``
    or ``./data``, then ``/usr/share/datasets/fashion-mnist``.
    """
    rng = np.random.RandomState(seed)
    parts = fashion_mnist_subsets("colored_fashion_mnist", root, download, n_train, n_val, n_test, rng)
    splits = {name: _split(images, classes, ids, np.full(len(ids), TEST_FLIP) if name == "test"
                           else _training_flips(len(ids)), rng, colored_schema(FASHION_CLASSES))
              for name, (images, classes, ids) in parts.items()}
    return _dataset(splits, (14, 14), "Fashion-MNIST", "mlp")


def fashion_mnist_subsets(dataset: str, root: str, download: bool, n_train: int, n_val: int, n_test: int,
                          rng: np.random.RandomState) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Random train/val subsets of Fashion-MNIST's 60,000 training images and a test subset of
    its 10,000 test images: ``{split: (images at 14x14 in [0, 1], classes, ids)}``. Test ids
    follow the 60,000 training ids, so that every id is unique."""
    train_images, train_classes, test_images, test_classes = load_fashion_mnist(root, download)
    if n_train + n_val > len(train_images) or n_test > len(test_images):
        raise HarnessError(f"{dataset}: n_train + n_val must be <= {len(train_images)} and "
                           f"n_test <= {len(test_images)}; got {n_train}, {n_val}, {n_test}")
    order = rng.permutation(len(train_images))
    test_order = rng.permutation(len(test_images))[:n_test]
    train_idx, val_idx = order[:n_train], order[n_train:n_train + n_val]
    return {
        "train": (_downsample(train_images, train_idx), train_classes[train_idx], train_idx),
        "val": (_downsample(train_images, val_idx), train_classes[val_idx], val_idx),
        "test": (_downsample(test_images, test_order), test_classes[test_order], test_order + len(train_images)),
    }


def _downsample(images: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """28x28 uint8 → 14x14 in [0, 1], keeping every other pixel (DomainBed's ColoredMNIST)."""
    return images[idx][:, ::2, ::2].astype(np.float32) / 255.0


def fashion_mnist_roots(root: str) -> list[Path]:
    if root:
        return [Path(root)]
    return [Path(os.environ.get("HARNESS_DATA_ROOT", "data")), Path(DEBIAN_ROOT)]


def load_fashion_mnist(root: str = "", download: bool = False) -> tuple[np.ndarray, ...]:
    """Train images, train classes, test images, test classes (uint8 / int64 numpy arrays),
    read from the first root that holds the four IDX files (see :func:`fashion_files`)."""
    candidates = fashion_mnist_roots(root)
    found = next((files for files in map(fashion_files, candidates) if files is not None), None)
    if found is None:
        if not download:
            looked = ", ".join(str(c) for c in candidates)
            raise HarnessError(
                f"Fashion-MNIST not found (looked in: {looked}). Get it offline with "
                "`apt-get install dataset-fashion-mnist` (Debian), or pass dataset.options.download=true "
                f"to let torchvision download it into {candidates[0]}, or set dataset.options.root.")
        from torchvision.datasets import FashionMNIST  # only to download

        FashionMNIST(str(candidates[0]), train=True, download=True)
        found = fashion_files(candidates[0])
    images, labels, test_images, test_labels = (read_idx_once(path) for path in found)
    return images, labels.astype(np.int64), test_images, test_labels.astype(np.int64)


def read_idx_once(path: Path) -> np.ndarray:
    """:func:`read_idx`, once per process for a file unchanged since (a probe trial's tasks and a
    sweep's checks read Fashion-MNIST many times; gunzipping it takes about a second); the array
    is read-only, so no caller can change what the next one gets."""
    stat = path.stat()
    return _read_idx_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    array = read_idx(Path(path))
    array.setflags(write=False)
    return array


def fashion_files(folder: Path) -> list[Path] | None:
    """The four IDX files in ``folder``, gzipped or not, in Debian's layout (the files
    themselves) or torchvision's (``FashionMNIST/raw/``); None unless all four are there."""
    found = []
    for name in FASHION_FILES:
        options = [base / f"{name}{suffix}" for base in (folder, folder / "FashionMNIST" / "raw")
                   for suffix in (".gz", "")]
        path = next((p for p in options if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found


IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped if its name ends in ``.gz``): two zero bytes, the element type, the
    number of dimensions, each dimension as a big-endian uint32, then the elements, big-endian."""
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as fh:
        data = fh.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_TYPES:
        raise HarnessError(f"{path} is not an IDX file: its first bytes are {data[:4]!r}, expected 00 00, "
                           f"a type byte ({', '.join(hex(k) for k in IDX_TYPES)}) and the number of dimensions")
    ndim, dtype = data[3], np.dtype(IDX_TYPES[data[2]])
    if len(data) < 4 + 4 * ndim:
        raise HarnessError(f"{path} is truncated: its header names {ndim} dimensions")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    size = int(np.prod(shape)) * dtype.itemsize
    if len(data) != 4 + 4 * ndim + size:
        raise HarnessError(f"{path} holds {len(data) - 4 - 4 * ndim} bytes of data, its header {shape} "
                           f"says {size}")
    return np.frombuffer(data, dtype, offset=4 + 4 * ndim).reshape(shape).astype(dtype.newbyteorder("="))
