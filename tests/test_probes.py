"""Probes: above chance where the labels are in the features, at chance where they are not, and
the regularisation chosen on validation only."""
import warnings

import numpy as np
import pytest
import torch

from harness.models import probes
from harness.models.logistic import fit_path
from harness.models.probes import DEFAULT_CS, choose_c, knn_predict, linear_probe, probe_layer


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
    assert np.array_equal(probe.predict(x["val"]), probe.val_predictions[probe.chosen])


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


def sklearn_fits(train_x, train_y, cs, tol=1e-4, max_iter=1000):
    """The probe as it was fitted before the batched solver: standardisation, then one
    scikit-learn ``LogisticRegression`` (lbfgs) per C."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        models = [LogisticRegression(C=c, tol=tol, max_iter=max_iter).fit(scaler.transform(train_x), train_y)
                  for c in cs]
    return lambda x: np.stack([m.predict(scaler.transform(x)) for m in models])


@pytest.mark.parametrize("seed", range(6))
def test_the_batched_fit_finds_scikit_learns_optimum_on_random_problems(seed):
    """The same objective (binomial for two classes, multinomial else, intercept unpenalised,
    penalty 1/(2C)): on random problems, converged scikit-learn and the batched fit give the same
    coefficients, for every C of a grid, correlated features included."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    n, dim, classes = 150 + 50 * seed, 3 + 2 * seed, 2 + seed % 3
    mixing = rng.normal(size=(dim, dim)) * rng.uniform(0.05, 3, size=dim)  # unequal, correlated features
    x = rng.normal(size=(n, dim)) @ mixing
    y = (x @ rng.normal(size=(dim, classes)) + rng.gumbel(size=(n, classes)) * 2).argmax(1)
    cs = [0.01, 0.3, 10.0]
    path = fit_path(x, y, cs, tol=1e-9)
    for i, c in enumerate(cs):
        model = LogisticRegression(C=c, tol=1e-10, max_iter=100_000).fit(x, y)
        assert path.weights[i].T == pytest.approx(model.coef_, abs=2e-4 * max(1, np.abs(model.coef_).max()))
        assert np.array_equal(path.predict(x)[i], model.predict(x))


def test_a_label_missing_from_training_is_never_predicted_and_one_class_predicts_it():
    x, y = toy(200, 0)
    path = fit_path(x, y * 3, [1.0])  # classes 0 and 3
    assert set(path.predict(x)[0]) == {0, 3}
    assert set(fit_path(x, np.full(200, 4), [0.1, 1.0]).predict(x[:5]).ravel()) == {4}


def test_separable_classes_and_constant_features_give_finite_weights_at_any_c():
    """Nearly no penalty on separable classes (the weights grow until the arithmetic stops them)
    and features without variance: the fit ends, finite, and separates the classes."""
    x = np.repeat(np.array([[-2.0, 1.0, 5.0], [-1.0, 1.0, 5.0], [1.0, 1.0, 5.0], [2.0, 1.0, 5.0]]), 5, axis=0)
    for y in (np.repeat([0, 0, 1, 1], 5), np.repeat([0, 1, 2, 2], 5)):
        path = fit_path(x, y, [1e-3, 1.0, 1e8], max_iter=200)
        assert np.isfinite(path.weights).all() and np.isfinite(path.bias).all()
        assert np.array_equal(path.predict(x)[-1], y)
        assert np.allclose(path.weights[:, 1:], 0)  # the constant features carry nothing


@pytest.fixture(scope="module")
def digits_features():
    """Every layer's features of digits under a small random-init CNN (the probe_cost benchmark's
    kind of network): real, correlated, low-rank features."""
    from harness.data.tasks import fit_inputs, labels, task_dataset
    from harness.models.backbones import cnn
    from harness.runs.features import encode_layers

    dataset, column = task_dataset("digits")
    dataset = fit_inputs(dataset, (2, 16, 16))
    torch.manual_seed(0)
    net = cnn(dataset.input_shape).eval()
    by_split = {s: encode_layers(net, split, 256, torch.device("cpu"), net.layer_names)
                for s, split in dataset.splits.items()}
    return {layer: {s: f[layer] for s, f in by_split.items()} for layer in net.layer_names}, labels(dataset, column)


def test_the_batched_probe_chooses_the_c_and_reaches_the_accuracy_of_one_fit_per_c(digits_features):
    """On every layer of a real network's digits features, over the default grid: the C that
    scikit-learn's lbfgs fits at their defaults (the probe before the batched solver) choose, and
    its test accuracy within 0.5 points; and for every C, against those fits converged (at its
    defaults lbfgs stops short at large C), validation accuracy within one example and test
    accuracy within 0.5 points."""
    features, ys = digits_features
    for layer, x in features.items():
        probe = linear_probe(x["train"], ys["train"], x["val"], ys["val"])
        current = sklearn_fits(x["train"], ys["train"], DEFAULT_CS)
        chosen = choose_c(current(x["val"]), ys["val"])
        assert probe.chosen == chosen, (layer, (probe.val_predictions == ys["val"]).mean(1))
        assert abs((probe.predict(x["test"]) == ys["test"]).mean() - (current(x["test"])[chosen] == ys["test"]).mean()) \
            <= 0.005, layer
        converged = sklearn_fits(x["train"], ys["train"], DEFAULT_CS, tol=1e-8, max_iter=10_000)
        val_gap = (probe.val_predictions == ys["val"]).mean(1) - (converged(x["val"]) == ys["val"]).mean(1)
        test_new = probe.path.predict((x["test"] - probe.mean) / probe.scale) == ys["test"]
        test_gap = test_new.mean(1) - (converged(x["test"]) == ys["test"]).mean(1)
        assert np.abs(val_gap).max() <= 1 / len(ys["val"]) + 1e-9, (layer, val_gap)
        assert np.abs(test_gap).max() <= 0.005, (layer, test_gap)
