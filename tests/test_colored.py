import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from harness.datasets.colored import (
    DEBIAN_ROOT,
    FASHION_FILES,
    colored_digits,
    colored_fashion_mnist,
    load_fashion_mnist,
    read_idx,
)

from harness.core.errors import HarnessError


def agreement(split, mask=slice(None)):
    return float((split.attr[mask] == split.y[mask]).float().mean())


def test_colored_digits_statistics():
    from sklearn.datasets import load_digits

    digits = load_digits().target
    ds = colored_digits(seed=0, test_fraction=0.5, val_fraction=0.0001)
    train, test = ds.splits["train"], ds.splits["test"]
    clean = torch.from_numpy((digits[train.ids.numpy()] < 5).astype(np.int64))
    noise = float((clean != train.y).float().mean())
    assert noise == pytest.approx(0.25, abs=0.05)
    assert agreement(train, slice(0, None, 2)) == pytest.approx(0.9, abs=0.04)
    assert agreement(train, slice(1, None, 2)) == pytest.approx(0.8, abs=0.05)
    assert agreement(test) == pytest.approx(0.1, abs=0.04)
    # the image sits in the channel of its colour, the other channel is blank
    x = train.x
    assert torch.all(x[torch.arange(len(x)), 1 - train.attr].abs().sum((1, 2)) == 0)
    assert ds.num_groups == 4 and ds.group_names()[1] == "class>=5, colour=green"


def test_colored_digits_is_deterministic_with_disjoint_stable_ids():
    a, b = colored_digits(seed=3), colored_digits(seed=3)
    for name in ("train", "val", "test"):
        assert torch.equal(a.splits[name].x, b.splits[name].x)
        assert torch.equal(a.splits[name].ids, b.splits[name].ids)
    ids = torch.cat([a.splits[s].ids for s in ("train", "val", "test")])
    assert len(set(ids.tolist())) == len(ids) == 1797
    assert not torch.equal(colored_digits(seed=4).splits["train"].ids, a.splits["train"].ids)


def test_fashion_reader_on_debian_layout(tiny_fashion):
    train_x, train_y, test_x, test_y = load_fashion_mnist(str(tiny_fashion))
    assert train_x.shape == (300, 28, 28) and test_x.shape == (100, 28, 28)
    ds = colored_fashion_mnist(root=str(tiny_fashion), n_train=200, n_val=50, n_test=100)
    assert ds.input_shape == (2, 14, 14)
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [200, 50, 100]
    test_ids = ds.splits["test"].ids
    assert test_ids.min() >= 300  # test ids never collide with training ids
    # the 14x14 input is the 28x28 image's every other pixel
    i = int(ds.splits["train"].ids[0])
    img = ds.splits["train"].x[0].sum(0).numpy()
    assert np.allclose(img, train_x[i][::2, ::2] / 255.0)


def test_idx_format_types_dims_big_endian_and_torchvision_layout(tmp_path, tiny_fashion):
    # 0x0C: big-endian int32, 2 dimensions, uncompressed
    values = np.array([[1, -2, 70000], [3, 4, -5]], dtype=">i4")
    path = tmp_path / "ints-idx2-int"
    path.write_bytes(bytes([0, 0, 0x0C, 2]) + np.array([2, 3], ">u4").tobytes() + values.tobytes())
    assert read_idx(path).tolist() == [[1, -2, 70000], [3, 4, -5]]
    path.write_bytes(bytes([0, 0, 0x0C, 2]) + np.array([2, 4], ">u4").tobytes() + values.tobytes())
    with pytest.raises(HarnessError, match="holds 24 bytes of data, its header \\(2, 4\\) says 32"):
        read_idx(path)
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(HarnessError, match="is not an IDX file"):
        read_idx(path)
    # torchvision's layout, uncompressed: the same arrays as Debian's gzipped files
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FASHION_FILES:
        (raw / name).write_bytes(gzip.decompress((tiny_fashion / f"{name}.gz").read_bytes()))
    for a, b in zip(load_fashion_mnist(str(tmp_path / "tv")), load_fashion_mnist(str(tiny_fashion))):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(HarnessError, match="apt-get install dataset-fashion-mnist.*download=true"):
        load_fashion_mnist(str(tmp_path / "nothing-here"))


def test_too_large_a_slice_is_refused(tiny_fashion):
    with pytest.raises(HarnessError, match="n_train \\+ n_val must be <= 300"):
        colored_fashion_mnist(root=str(tiny_fashion), n_train=300, n_val=50, n_test=10)


real_fashion = pytest.mark.skipif(
    not (Path(DEBIAN_ROOT) / f"{FASHION_FILES[0]}.gz").exists(),
    reason=f"real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist puts it in {DEBIAN_ROOT})")


@real_fashion
def test_real_colored_fashion_mnist_statistics(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    ds = colored_fashion_mnist(root=DEBIAN_ROOT)
    train, val, test = (ds.splits[s] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (20000, 5000, 10000)
    _, train_classes, _, test_classes = load_fashion_mnist(DEBIAN_ROOT)
    clean = torch.from_numpy((train_classes[train.ids.numpy()] < 5).astype(np.int64))
    assert float((clean != train.y).float().mean()) == pytest.approx(0.25, abs=0.01)
    assert agreement(train, slice(0, None, 2)) == pytest.approx(0.9, abs=0.01)
    assert agreement(train, slice(1, None, 2)) == pytest.approx(0.8, abs=0.01)
    assert agreement(val) == pytest.approx(0.85, abs=0.02)
    assert agreement(test) == pytest.approx(0.1, abs=0.01)


@real_fashion
def test_training_on_full_real_colored_fashion_mnist(tmp_path, monkeypatch):
    """End to end on the real files: GroupDRO with annotated groups already beats ERM on the
    test worst group after a few hundred steps (ERM follows the colour, which flips at test)."""
    from harness.core import config
    from harness.core.files import read_jsonl
    from harness.runs.run import train

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    wga = {}
    for algorithm in ("erm", "group_dro"):
        cfg = config.load(None, ["dataset.name=colored_fashion_mnist", f"algorithm.name={algorithm}",
                                 "steps=300", "eval_every=300", f"output_dir={tmp_path}"])
        rows = read_jsonl(train(cfg) / "results.jsonl")
        assert rows[-1]["metrics"]["train"]["n"] == 5000  # worst-group evaluates a seeded train subset
        assert rows[-1]["metrics"]["test"]["n"] == 10000
        wga[algorithm] = rows[-1]["metrics"]["test"]["worst_group_acc"]
    assert wga["erm"] < 0.25 < wga["group_dro"]
