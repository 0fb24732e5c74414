"""A tiny dSprites archive in the real format, for tests/test_dsprites.py and the conformance checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from harness.datasets.dsprites import ARCHIVE, FACTORS, SIZES, render


def write_archive(folder: Path, rows: np.ndarray) -> None:
    """imgs uint8 (N, 64, 64), latents_values float64 (N, 6), latents_classes int64 (N, 6; colour
    first, one colour) and a pickled metadata dict, as DeepMind's file; ``rows`` are the grid
    classes (N, 5) of its images."""
    classes = np.concatenate([np.zeros((len(rows), 1), dtype=np.int64), rows], 1)
    values = classes.astype(np.float64) / np.maximum(np.array([1, *SIZES]) - 1, 1)
    metadata = np.array({"latents_names": ("color", *FACTORS), "latents_sizes": np.array([1, *SIZES])},
                        dtype=object)
    np.savez_compressed(folder / ARCHIVE, imgs=render(rows).astype(np.uint8), latents_values=values,
                        latents_classes=classes, metadata=metadata)


def random_rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    return np.stack([rng.randint(0, s, n) for s in SIZES], 1)
