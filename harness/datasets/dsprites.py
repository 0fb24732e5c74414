"""dSprites (Matthey et al., 2017): 64×64 binary sprites with known factors of variation, for the
disentanglement protocol, with optionally correlated training factors (Träuble et al., 2021;
Roth et al., 2023).

The factor grid is shape 3 (square, ellipse, heart), scale 6 (0.5–1), orientation 40 (0–2π),
posX 32 and posY 32 (0–1): 737,280 combinations, each one image. ``dsprites`` reads the real
archive; ``procedural_dsprites`` draws the same grid on demand (never the whole grid in memory),
optionally with a colour factor (6 binary RGB colours).

Splits. Factor values are scaled to [0, 1] (class / (size − 1)). The training split is drawn
from the grid without replacement, each combination weighted by exp(−(c_i − c_j)² / (2σ²)) per
correlated pair (i, j), the weights multiplied over pairs (``posX:-posY``: anti-correlated,
c_j → 1 − c_j); validation and test are drawn uniformly (independent factors); the ``shift``
split uses another pairing (by default the training pairs reversed). Splits are disjoint; an
example's id is its grid index (its archive row). Metadata: ``shape`` is the label, the other
factors are ``factor`` columns (the disentanglement protocol scores all of them).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from harness.core.errors import HarnessError
from harness.core.registry import DATASETS
from harness.data.dataset import Column, Schema, ShiftDataset, Split

ARCHIVE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
SIZE = 64
SHAPES = ("square", "ellipse", "heart")
FACTORS = ("shape", "scale", "orientation", "posX", "posY")
SIZES = (3, 6, 40, 32, 32)
COLOURS = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "yellow": (1, 1, 0), "magenta": (1, 0, 1),
           "cyan": (0, 1, 1)}
SPLIT_NAMES = ("train", "val", "test", "shift")
# Geometry of the procedural sprites: centre = MARGIN + SPAN·pos pixels, half-size HALF·scale.
MARGIN, SPAN, HALF = 10.0, 44.0, 9.0


def render(classes: np.ndarray) -> np.ndarray:
    """Binary 64×64 images (n, 64, 64) of the factor classes (n, 5: shape, scale, orientation,
    posX, posY): each pixel centre is mapped into the sprite's frame and tested against its shape."""
    shape, scale, orient, pos_x, pos_y = (classes[:, k] for k in range(5))
    half = HALF * (0.5 + 0.5 * scale / (SIZES[1] - 1))
    theta = 2 * np.pi * orient / (SIZES[2] - 1)  # as the archive: 0 and 2π are both in the grid
    cx, cy = MARGIN + SPAN * pos_x / (SIZES[3] - 1), MARGIN + SPAN * pos_y / (SIZES[4] - 1)
    grid = np.arange(SIZE) + 0.5
    dx = grid[None, None, :] - cx[:, None, None]
    dy = grid[None, :, None] - cy[:, None, None]
    cos, sin, r = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None], half[:, None, None]
    u, v = (cos * dx + sin * dy) / r, (cos * dy - sin * dx) / r
    out = np.zeros((len(classes), SIZE, SIZE), dtype=bool)
    square, ellipse, heart = (shape == k for k in range(3))
    out[square] = np.maximum(np.abs(u[square]), np.abs(v[square])) <= 1
    out[ellipse] = u[ellipse] ** 2 + (v[ellipse] / 0.5) ** 2 <= 1
    x, y = 1.15 * u[heart], 0.25 - 1.15 * v[heart]  # the implicit heart curve, point down
    out[heart] = (x ** 2 + y ** 2 - 1) ** 3 - x ** 2 * y ** 3 <= 0
    return out


class Sprites(torch.utils.data.Dataset):
    """Procedural sprites drawn on demand from their grid classes (n, 5), or (n, 6) with the
    colour class first; float32 tensors (1 or 3, 64, 64) in {0, 1}."""

    def __init__(self, classes: np.ndarray, colour: bool):
        self.classes, self.colour = classes, colour
        self.rgb = np.array(list(COLOURS.values()), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.__getitems__([i])[0]

    def __getitems__(self, positions: Sequence[int]) -> torch.Tensor:
        classes = self.classes[np.asarray(positions, dtype=np.int64)]
        if not self.colour:
            return torch.from_numpy(render(classes)[:, None].astype(np.float32))
        masks = render(classes[:, 1:]).astype(np.float32)
        return torch.from_numpy(masks[:, None] * self.rgb[classes[:, 0]][:, :, None, None])


class ArchiveImages(torch.utils.data.Dataset):
    """Archive images held as uint8 (n, 64, 64), served as float32 (1, 64, 64)."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.__getitems__([i])[0]

    def __getitems__(self, positions: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(self.images[np.asarray(positions, dtype=np.int64)][:, None].astype(np.float32))


def parse_pairs(text: str, names: Sequence[str], option: str) -> list[tuple[int, int, bool]]:
    """``"shape:scale,posX:-posY"`` → [(i, j, anti-correlated)]; empty text, no pairs."""
    pairs = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        left, colon, right = item.partition(":")
        anti = right.startswith("-")
        right = right.lstrip("-")
        if not colon or left not in names or right not in names or left == right:
            raise HarnessError(f"dataset option {option}={text!r}: each pair is <factor>:<factor> or "
                               f"<factor>:-<factor> (anti-correlated) of two different factors, comma-separated; "
                               f"factors: {', '.join(names)}")
        pairs.append((list(names).index(left), list(names).index(right), anti))
    return pairs


def log_weights(classes: Sequence[np.ndarray], sizes: Sequence[int], pairs: list[tuple[int, int, bool]],
                sigma: float) -> np.ndarray:
    """log Π over pairs of exp(−(c_i − c_j)² / (2σ²)), c = class / (size − 1) (1 − c_j when
    anti-correlated). ``classes`` are per-factor arrays that broadcast together (grid axes or
    archive rows)."""
    out = np.zeros(())
    for i, j, anti in pairs:
        ci, cj = classes[i] / (sizes[i] - 1), classes[j] / (sizes[j] - 1)
        out = out - (ci - (1 - cj if anti else cj)) ** 2 / (2 * sigma ** 2)
    return out


def draw_splits(pool: int, train_logw: np.ndarray, shift_logw: np.ndarray, counts: dict[str, int],
                seed: int) -> dict[str, np.ndarray]:
    """Disjoint pool positions per split, drawn without replacement: train and shift by their log
    weights (one per pool position; Gumbel top-k, Efraimidis and Spirakis' weighted sampling),
    val and test, and splits without pairs, uniformly."""
    total = sum(counts.values())
    if total > pool:
        raise HarnessError(f"dataset options n_train + n_val + n_test + n_shift = {total} exceed the {pool} "
                           "combinations available")
    rng = np.random.default_rng(seed)
    free = np.ones(pool, dtype=bool)
    out = {}
    for name in SPLIT_NAMES:
        logw, n = {"train": train_logw, "shift": shift_logw}.get(name), counts[name]
        if logw is None or not logw.any():
            out[name] = rng.choice(np.flatnonzero(free), n, replace=False)
        else:
            keys = np.where(free, logw + rng.gumbel(size=pool), -np.inf)
            top = np.argpartition(-keys, n - 1)[:n]
            out[name] = top[np.argsort(-keys[top], kind="stable")]
        free[out[name]] = False
    return out


def _check(sigma: float, counts: dict[str, int]) -> None:
    if not sigma > 0:
        raise HarnessError(f"dataset option sigma must be > 0 (smaller is a stronger correlation), got {sigma}")
    for name, n in counts.items():
        if n < 1:
            raise HarnessError(f"dataset option n_{name} must be a positive integer, got {n}")


def _schema(names: Sequence[str], sizes: Sequence[int]) -> Schema:
    value_names = {"shape": SHAPES, "colour": tuple(COLOURS)}
    return Schema(tuple(Column(n, "label" if n == "shape" else "factor", s, value_names.get(n, ()))
                        for n, s in zip(names, sizes)))


def _correlation(classes: np.ndarray, sizes: Sequence[int], pairs: list[tuple[int, int, bool]],
                 names: Sequence[str]) -> dict[str, float]:
    """Pearson correlation of each pair's scaled factor values in a split (for info)."""
    out = {}
    for i, j, anti in pairs:
        a, b = classes[:, i] / (sizes[i] - 1), classes[:, j] / (sizes[j] - 1)
        out[f"{names[i]}:{'-' if anti else ''}{names[j]}"] = float(np.corrcoef(a, b)[0, 1])
    return out


def _dataset(x: dict[str, torch.utils.data.Dataset], ids: dict[str, np.ndarray], classes: dict[str, np.ndarray],
             names: Sequence[str], sizes: Sequence[int], channels: int, pairs: list, shift_pairs: list,
             info: dict) -> ShiftDataset:
    schema = _schema(names, sizes)
    splits = {s: Split.of(x[s], ids[s], schema, {n: classes[s][:, k] for k, n in enumerate(names)})
              for s in SPLIT_NAMES}
    info = {**info, "factors": list(names),
            "train_correlation": _correlation(classes["train"], sizes, pairs, names),
            "shift_correlation": _correlation(classes["shift"], sizes, shift_pairs, names)}
    return ShiftDataset(splits=splits, input_shape=(channels, SIZE, SIZE), default_backbone="cnn", info=info)


def _pairings(correlated: str, shift: str, names: Sequence[str]) -> tuple[list, list]:
    pairs = parse_pairs(correlated, names, "correlated")
    shift_pairs = parse_pairs(shift, names, "shift") if shift else [(i, j, not anti) for i, j, anti in pairs]
    return pairs, shift_pairs


@DATASETS.register("procedural_dsprites")
def procedural_dsprites(colour: bool = False, correlated: str = "", shift: str = "", sigma: float = 0.1,
                        n_train: int = 20000, n_val: int = 2000, n_test: int = 5000, n_shift: int = 2000,
                        seed: int = 0) -> ShiftDataset:
    """dSprites' factor grid drawn procedurally on demand (embedded, no download).

    ``colour``: a sixth factor, the sprite's colour (6 binary RGB colours, 3 channels).
    ``correlated``: pairs of factors correlated in training, e.g. ``shape:scale`` or
    ``posX:-posY``; ``sigma`` their strength; ``shift``: the pairing of the shift split
    (default: the training pairs reversed).
    """
    names, sizes = (("colour", *FACTORS), (len(COLOURS), *SIZES)) if colour else (FACTORS, SIZES)
    counts = {"train": n_train, "val": n_val, "test": n_test, "shift": n_shift}
    _check(sigma, counts)
    pairs, shift_pairs = _pairings(correlated, shift, names)
    axes = [np.arange(s).reshape([-1 if a == k else 1 for a in range(len(sizes))]) for k, s in enumerate(sizes)]
    pool = int(np.prod(sizes))
    parts = draw_splits(pool, np.broadcast_to(log_weights(axes, sizes, pairs, sigma), sizes).ravel(),
                        np.broadcast_to(log_weights(axes, sizes, shift_pairs, sigma), sizes).ravel(), counts, seed)
    classes = {s: np.stack(np.unravel_index(idx, sizes), 1).astype(np.int64) for s, idx in parts.items()}
    x = {s: Sprites(c, colour) for s, c in classes.items()}
    return _dataset(x, parts, classes, names, sizes, 3 if colour else 1, pairs, shift_pairs,
                    {"source": "procedural", "correlated": correlated, "sigma": sigma,
                     "shift": shift or "training pairs reversed"})


def archive_path(root: str) -> Path:
    """The archive in ``root`` (a folder, or the file itself); empty: ``$HARNESS_DATA_ROOT`` or ``./data``."""
    folder = Path(root or os.environ.get("HARNESS_DATA_ROOT", "data"))
    path = folder if folder.name == ARCHIVE else folder / ARCHIVE
    if not path.is_file():
        raise HarnessError(f"dSprites archive {ARCHIVE} not found at {path}; put it there (it is DeepMind's "
                           "dsprites-dataset file) or set dataset.options.root to its folder, or use the embedded "
                           "procedural_dsprites")
    return path


def read_rows(path: Path, key: str, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (sorted) of the array ``key`` of an .npz archive, in one streaming pass (the
    real ``imgs`` is 3 GB uncompressed; only the rows asked for are kept)."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        if fortran:
            raise HarnessError(f"{path}: {key} is stored in Fortran order; expected the archive's C order")
        start, row_bytes = fh.tell(), int(np.prod(shape[1:])) * dtype.itemsize
        out = np.empty((len(rows), *shape[1:]), dtype=dtype)
        for k, row in enumerate(rows):
            fh.seek(start + int(row) * row_bytes)
            out[k] = np.frombuffer(fh.read(row_bytes), dtype=dtype).reshape(shape[1:])
    return out


@DATASETS.register("dsprites")
def dsprites(root: str = "", correlated: str = "", shift: str = "", sigma: float = 0.1, n_train: int = 20000,
             n_val: int = 2000, n_test: int = 5000, n_shift: int = 2000, seed: int = 0) -> ShiftDataset:
    """The real dSprites archive, read from ``root`` (options as ``procedural_dsprites``)."""
    counts = {"train": n_train, "val": n_val, "test": n_test, "shift": n_shift}
    _check(sigma, counts)
    pairs, shift_pairs = _pairings(correlated, shift, FACTORS)
    path = archive_path(root)
    with np.load(path, allow_pickle=False) as archive:
        latents = archive["latents_classes"]
    if latents.ndim != 2 or latents.shape[1] != 6:
        raise HarnessError(f"{path}: latents_classes must be (N, 6) (colour, shape, scale, orientation, posX, posY), "
                           f"got shape {latents.shape}")
    table = latents[:, 1:].astype(np.int64)
    if ((table < 0) | (table >= np.array(SIZES))).any():
        raise HarnessError(f"{path}: latents_classes outside the grid sizes {dict(zip(FACTORS, SIZES))}")
    columns = [table[:, k] for k in range(len(FACTORS))]
    parts = draw_splits(len(table), np.broadcast_to(log_weights(columns, SIZES, pairs, sigma), len(table)),
                        np.broadcast_to(log_weights(columns, SIZES, shift_pairs, sigma), len(table)), counts, seed)
    wanted = np.unique(np.concatenate(list(parts.values())))
    images = read_rows(path, "imgs", wanted)
    x = {s: ArchiveImages(images[np.searchsorted(wanted, idx)]) for s, idx in parts.items()}
    classes = {s: table[idx] for s, idx in parts.items()}
    return _dataset(x, parts, classes, FACTORS, SIZES, 1, pairs, shift_pairs,
                    {"source": str(path), "correlated": correlated, "sigma": sigma,
                     "shift": shift or "training pairs reversed"})
