from pathlib import Path

import numpy as np
import pytest
from harness.datasets.background import background_fashion_mnist, compose, places
from harness.datasets.colored import DEBIAN_ROOT, FASHION_FILES, colored_fashion_mnist, load_fashion_mnist

from harness.core.errors import HarnessError


def test_backgrounds_take_their_places_colours_and_objects_are_white():
    rng = np.random.RandomState(0)
    place = np.array([0, 1] * 100)
    x = compose(np.zeros((200, 6, 6), dtype=np.float32), place, rng)
    red, blue = x[:, 0], x[:, 2]
    assert np.all(red[place == 0] > blue[place == 0])  # land: browns, ochres, yellow-greens
    assert np.all(blue[place == 1] > red[place == 1])  # water: cyans, blues
    assert 0.4 * 0.6 * 0.1 <= x.max(1).min() and x.max() <= 1.0
    assert np.allclose(compose(np.ones((4, 6, 6), dtype=np.float32), place[:4], rng), 1.0)


def test_place_agreement_in_training_and_balance_elsewhere():
    rng = np.random.RandomState(0)
    y = rng.randint(0, 2, 20000)
    assert np.mean(places(y, False, 0.95, rng) == y) == pytest.approx(0.95, abs=0.01)
    balanced = places(y, True, 0.95, rng)
    for c in (0, 1):
        counts = np.bincount(balanced[y == c], minlength=2)
        assert abs(counts[0] - counts[1]) <= 1


def test_built_from_fashion_files_with_clean_labels(tiny_fashion):
    ds = background_fashion_mnist(root=str(tiny_fashion), n_train=200, n_val=50, n_test=100)
    _, train_classes, _, _ = load_fashion_mnist(str(tiny_fashion))
    train = ds.splits["train"]
    assert train.x.shape == (200, 3, 14, 14) and ds.input_shape == (3, 14, 14)
    assert np.array_equal(train.y.numpy(), (train_classes[train.ids.numpy()] < 5).astype(np.int64))
    assert ds.group_names()[1] == "class>=5, place=water"
    colored = colored_fashion_mnist(root=str(tiny_fashion), n_train=200, n_val=50, n_test=100)
    for split in ("train", "val", "test"):  # the same subsets of Fashion-MNIST for the same seed
        assert np.array_equal(ds.splits[split].ids.numpy(), colored.splits[split].ids.numpy())


def test_agreement_must_be_a_probability(tiny_fashion):
    with pytest.raises(HarnessError, match="agreement must be a probability in \\[0, 1\\], got 1.5"):
        background_fashion_mnist(root=str(tiny_fashion), n_train=200, n_val=50, n_test=100, agreement=1.5)


@pytest.mark.skipif(not (Path(DEBIAN_ROOT) / f"{FASHION_FILES[0]}.gz").exists(),
                    reason=f"real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist: {DEBIAN_ROOT})")
def test_real_background_fashion_mnist_statistics(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    ds = background_fashion_mnist(root=DEBIAN_ROOT)
    train, val, test = (ds.splits[s] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (20000, 5000, 10000)
    assert float((train.attr == train.y).float().mean()) == pytest.approx(0.95, abs=0.005)
    for split in (val, test):
        groups = np.bincount((split.y * 2 + split.attr).numpy(), minlength=4)
        assert groups.min() >= 0.24 * len(split)
