"""Probes: above chance where the labels are in the features, at chance where they are not, and
the regularisation chosen on validation only."""
import numpy as np
import pytest

from harness.models import probes
from harness.models.probes import choose_c, knn_predict, linear_probe, probe_layer


def toy(n, seed, shuffled=False):
    """Two Gaussian blobs in 8-D, 4 units apart along the first axis (separable); labels
    optionally shuffled against the inputs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 8))
    x[:, 0] += 4 * y
    if shuffled:
        y = rng.permutation(y)
    return x, y


def splits(shuffled=False):
    parts = {s: toy(n, i, shuffled) for i, (s, n) in enumerate((("train", 400), ("val", 300), ("test", 600)))}
    return {s: p[0] for s, p in parts.items()}, {s: p[1] for s, p in parts.items()}


def test_probes_beat_chance_on_a_separable_toy_set():
    x, y = splits()
    out = probe_layer(x, y, k=10)
    for split in ("val", "test"):
        assert np.mean(out[f"{split}.probe"] == y[split]) > 0.95
        assert np.mean(out[f"{split}.knn"] == y[split]) > 0.9
    assert np.array_equal(out["test.y"], y["test"])


def test_probes_sit_at_chance_on_labels_shuffled_against_the_inputs():
    x, y = splits(shuffled=True)
    out = probe_layer(x, y, k=10)
    for key in ("test.probe", "test.knn"):
        accuracy = np.mean(out[key] == y["test"])
        assert abs(accuracy - 0.5) < 0.07, (key, accuracy)  # 600 test examples: s.e. of chance 0.02


def test_c_is_the_best_on_validation_ties_to_the_smallest():
    val_y = np.array([0, 1, 1, 0])
    predictions = np.array([[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]])
    assert choose_c(predictions, val_y) == 1
    x, y = splits()
    probe = linear_probe(x["train"], y["train"], x["val"], y["val"], cs=(10.0, 1e-6, 1.0))
    assert list(probe.cs) == [1e-6, 1.0, 10.0]
    accuracies = (probe.val_predictions == y["val"]).mean(1)
    assert probe.chosen == int(np.argmax(accuracies)) and probe.chosen > 0  # C=1e-6 predicts one class
    assert probe.model.C == probe.cs[probe.chosen]


class Reads(dict):
    """A mapping that logs which splits are read, into a shared log."""

    def __init__(self, data, log, what):
        super().__init__(data)
        self.log, self.what = log, what

    def __getitem__(self, split):
        self.log.append((self.what, split))
        return super().__getitem__(split)


def test_the_test_split_is_never_read_before_c_is_chosen(monkeypatch):
    x, y = splits()
    log = []
    real = probes.choose_c
    monkeypatch.setattr(probes, "choose_c", lambda *a: log.append(("chosen", None)) or real(*a))
    out = probe_layer(Reads(x, log, "x"), Reads(y, log, "y"), k=5)
    first_test = min(i for i, (_, split) in enumerate(log) if split == "test")
    assert log.index(("chosen", None)) < first_test, log
    # and the choice does not depend on the test split: another test set, the same C and validation
    x2, y2 = dict(x), dict(y)
    x2["test"], y2["test"] = toy(600, 99, shuffled=True)
    again = probe_layer(x2, y2, k=5)
    assert np.array_equal(again["val.probe_by_c"], out["val.probe_by_c"])
    assert np.array_equal(again["val.probe"], out["val.probe"])


def test_knn_votes_among_the_nearest_by_cosine():
    train_x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 1.0]])
    train_y = np.array([0, 0, 1, 1, 1])
    # [10, 1] points along the first axis: its 2 cosine neighbours are class 0 despite the norm
    assert knn_predict(train_x, train_y, np.array([[10.0, 1.0], [0.0, 3.0]]), k=2).tolist() == [0, 1]
    assert knn_predict(train_x, train_y, np.array([[1.0, 0.0]]), k=50).tolist() == [1]  # k capped: majority


def test_probe_layer_stores_the_spectrum_of_each_split():
    x, y = splits()
    out = probe_layer(x, y, k=5)
    assert out["train.spectrum"].shape == (8,)
    assert out["train.spectrum"] == pytest.approx(np.linalg.svd(x["train"], compute_uv=False))
