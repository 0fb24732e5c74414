"""Background Fashion-MNIST: a Waterbirds-like benchmark on real Fashion-MNIST objects.

On the colored datasets the label is noisy and the colour more predictive than the shape, so
plain ERM's errors already are the colour minority, and discovery methods cannot be told apart.
Here, as in Waterbirds, the label is clean and learnable from the object, while an easy spurious
feature, the background, agrees with it in most, but not all, training examples.

Construction of each example:

- object: a Fashion-MNIST image at 14x14 (every other pixel, as ``colored_fashion_mnist``),
  grey levels ``o`` in [0, 1]; label ``y = class < 5`` (T-shirt, trouser, pullover, dress, coat
  vs sandal, shirt, sneaker, bag, ankle boot), without label noise;
- place ``a`` (the annotated attribute): ``land`` or ``water``. In training the place agrees with
  the label (``land`` for class>=5, ``water`` for class<5) with probability ``agreement``
  (0.95); in validation and test every class is split evenly between the two places;
- background: one colour per image from its place's palette, hue U(0.05, 0.30) (browns, ochres,
  yellow-greens) for land and U(0.50, 0.70) (cyans, blues) for water, saturation U(0.4, 0.9),
  value U(0.4, 0.9), multiplied by a smooth texture (4x4 noise from U(0.6, 1), upsampled
  bilinearly to 14x14);
- image (3 channels): ``o * white + (1 - o) * background``, a light object on a textured colour.

Metadata: ``y`` (label), ``place`` (the annotated attribute) and ``class`` (the garment);
groups are (y, place). The
minority groups are class>=5 on water and class<5 on land (about 2.5% of training each, a quarter
of validation and test each).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from harness.datasets.colored import CLASSES, FASHION_CLASSES, FASHION_SIZES, fashion_mnist_subsets, source_class

from harness.core.errors import HarnessError
from harness.core.options import Option
from harness.core.registry import DATASETS
from harness.data.dataset import Column, Schema, ShiftDataset, Split

PLACES = ("land", "water")
SCHEMA = Schema((Column("y", "label", 2, CLASSES), Column("place", "attribute", 2, PLACES),
                 source_class(FASHION_CLASSES)), attribute="place")
HUES = ((0.05, 0.30), (0.50, 0.70))  # per place
SATURATION = (0.4, 0.9)
VALUE = (0.4, 0.9)
TEXTURE = (0.6, 1.0)
TEXTURE_CELLS = 4


def backgrounds(place: np.ndarray, size: int, rng: np.random.RandomState) -> np.ndarray:
    """Textured colour backgrounds (n, 3, size, size) in [0, 1] for places 0 (land) / 1 (water)."""
    from matplotlib.colors import hsv_to_rgb  # matplotlib is imported when images are made, not by `harness list`

    n = len(place)
    low, high = np.array(HUES).T
    hsv = np.stack([rng.uniform(low[place], high[place]), rng.uniform(*SATURATION, n), rng.uniform(*VALUE, n)], 1)
    colour = hsv_to_rgb(hsv).astype(np.float32)
    noise = torch.from_numpy(rng.uniform(*TEXTURE, (n, 1, TEXTURE_CELLS, TEXTURE_CELLS)).astype(np.float32))
    texture = F.interpolate(noise, size=(size, size), mode="bilinear", align_corners=True).numpy()
    return colour[:, :, None, None] * texture


def places(y: np.ndarray, balanced: bool, agreement: float, rng: np.random.RandomState) -> np.ndarray:
    """Training: the place agrees with the label with probability ``agreement``. Balanced: half
    of each class on each place, independently of everything else."""
    if not balanced:
        return np.where(rng.rand(len(y)) < agreement, y, 1 - y)
    place = np.zeros(len(y), dtype=np.int64)
    for c in (0, 1):
        members = np.flatnonzero(y == c)
        place[members] = rng.permutation(len(members)) % 2
    return place


def compose(images: np.ndarray, place: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """Light objects (n, h, w in [0, 1]) over their place's backgrounds: (n, 3, h, w)."""
    alpha = images[:, None]
    return (alpha + (1 - alpha) * backgrounds(place, images.shape[-1], rng)).astype(np.float32)


@DATASETS.register("background_fashion_mnist", options={
    **FASHION_SIZES, "agreement": Option(0.95, float, low=0, high=1)})
def background_fashion_mnist(root: str = "", download: bool = False, seed: int = 0, n_train: int = 20000,
                             n_val: int = 5000, n_test: int = 10000, agreement: float = 0.95) -> ShiftDataset:
    """Waterbirds-like: clean Fashion-MNIST objects on land/water backgrounds (95% agreement in train).

    The background is an easy but imperfect spurious feature; validation and test are balanced.
    See the module's docstring for the construction."""
    if not 0.0 <= agreement <= 1.0:
        raise HarnessError(f"background_fashion_mnist: agreement must be a probability in [0, 1], got {agreement}")
    rng = np.random.RandomState(seed)
    splits = {}
    for name, (images, classes, ids) in fashion_mnist_subsets("background_fashion_mnist", root, download,
                                                              n_train, n_val, n_test, rng).items():
        y = (classes < 5).astype(np.int64)
        place = places(y, name != "train", agreement, rng)
        splits[name] = Split.of(torch.from_numpy(compose(images, place, rng)), ids, SCHEMA,
                                {"y": y, "place": place, "class": classes})
    return ShiftDataset(
        splits=splits, input_shape=(3, 14, 14), default_backbone="mlp",
        info={"recipe": "background", "source": "Fashion-MNIST", "label_noise": 0.0,
              "train_place_agreement": agreement, "eval_place_agreement": 0.5},
    )
