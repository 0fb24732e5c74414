"""Shared fixtures: tiny configs and a fresh run folder per test."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from harness import config


@pytest.fixture
def tiny_cfg(tmp_path):
    """A resolved config for a short colored_digits run in its own folder."""

    def make(*overrides: str) -> dict:
        return config.load(None, [f"output_dir={tmp_path / 'runs'}", "steps=60", "eval_every=20",
                                  "backbone.options.width=64", *overrides])

    return make


def write_idx(path, array):
    """An IDX file (big-endian header) gzipped, as Fashion-MNIST ships."""
    header = struct.pack(">I", (0x08 << 8) | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fashion(tmp_path, monkeypatch):
    """Debian's layout (four gzipped IDX files in one folder), 300 + 100 images."""
    rng = np.random.RandomState(0)
    folder = tmp_path / "fashion"
    folder.mkdir()
    for prefix, n in (("train", 300), ("t10k", 100)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.randint(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.randint(0, 10, n))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return folder
