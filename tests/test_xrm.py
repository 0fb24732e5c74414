import math

import pytest
import torch
import torch.nn.functional as F
from harness.algorithms.xrm import class_balanced_loss, flip_probability
from torch import nn

from harness.core.registry import ALGORITHMS
from harness.models.algorithm import Batch
from harness.models.backbones import Backbone


def identity_backbone():
    """Features = the 2-d input itself, so a twin's logits are its head applied to x."""
    return Backbone(nn.Flatten(), n_outputs=2)


def make_xrm(train_size, lr=0.0, num_classes=2):
    entry = ALGORITHMS.get("xrm")
    hparams = {k: v.default for k, v in entry.hparams.items()} | {"lr": lr}
    torch.manual_seed(0)
    return entry.obj(identity_backbone, num_classes, 0, hparams, train_size)


def set_head(algo, twin, weight, bias):
    with torch.no_grad():
        algo.twins[twin][1].weight.copy_(torch.tensor(weight, dtype=torch.float))
        algo.twins[twin][1].bias.copy_(torch.tensor(bias, dtype=torch.float))


def batch(y, x=None):
    y = torch.as_tensor(y)
    x = torch.zeros(len(y), 2) if x is None else torch.as_tensor(x, dtype=torch.float)
    return Batch(x, y, torch.full_like(y, -1), torch.arange(len(y)))


def test_flip_probability_formula():
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]])
    assert flip_probability(probs).tolist() == pytest.approx([0.0, 1.0, 0.6])
    three = torch.tensor([[0.6, 0.3, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    assert flip_probability(three).tolist() == pytest.approx([0.4, 0.0])  # (3 * 0.6 - 1) / 2


def test_flips_on_a_hand_made_batch_happen_with_that_probability():
    n = 4000
    algo = make_xrm(n)
    for twin in (0, 1):  # both twins say class 1 with probability 0.8, whatever the input
        set_head(algo, twin, [[0, 0], [0, 0]], [0, math.log(4)])
    y = torch.tensor([0, 1]).repeat(n // 2)
    logs = algo.update(batch(y), step=0)
    flipped = algo.labels != y
    assert flipped[y == 1].sum() == 0  # already the held-out prediction: nothing to flip
    assert float(flipped[y == 0].float().mean()) == pytest.approx(0.6, abs=0.03)
    assert torch.all(algo.labels[flipped] == 1)
    assert float(logs["flip_rate"]) == pytest.approx(float(flipped.float().mean()))
    assert torch.equal(algo.original, y)


def test_held_out_prediction_comes_from_the_sibling():
    algo = make_xrm(200)
    set_head(algo, 0, [[0, 0], [0, 0]], [20, 0])  # twin A: class 0, surely
    set_head(algo, 1, [[0, 0], [0, 0]], [0, 20])  # twin B: class 1, surely
    algo.update(batch(torch.zeros(200, dtype=torch.long)), step=0)
    # examples of twin A are held out by B, which says 1; those of twin B by A, which agrees with 0
    assert torch.equal(algo.labels, (algo.assign == 0).long())


def test_flips_revert_when_the_held_out_prediction_agrees_again():
    algo = make_xrm(50)
    y = torch.zeros(50, dtype=torch.long)
    for twin in (0, 1):
        set_head(algo, twin, [[0, 0], [0, 0]], [0, 20])
    algo.update(batch(y), step=0)
    assert float(algo.flip_rate()) == 1.0
    for twin in (0, 1):
        set_head(algo, twin, [[0, 0], [0, 0]], [20, 0])
    algo.update(batch(y), step=1)
    assert float(algo.flip_rate()) == 0.0
    assert torch.equal(algo.labels, y)


def test_class_balanced_loss_sums_per_class_means():
    torch.manual_seed(1)
    logits = torch.randn(5, 3)
    y = torch.tensor([0, 0, 0, 2, 2])  # class 1 absent: contributes nothing
    losses = F.cross_entropy(logits, y, reduction="none")
    expected = losses[:3].mean() + losses[3:].mean()
    assert float(class_balanced_loss(logits, y, 3)) == pytest.approx(float(expected))


def test_the_loss_trains_each_twin_on_its_own_half_only():
    algo = make_xrm(64, lr=1e-2)
    before = [[p.detach().clone() for p in twin.parameters()] for twin in algo.twins]
    with torch.no_grad():
        algo.assign.zero_()  # every example belongs to twin A
    algo.update(batch(torch.randint(0, 2, (64,)), torch.randn(64, 2)), step=0)
    changed = [[not torch.equal(a, b) for a, b in zip(old, twin.parameters())] for old, twin in zip(before, algo.twins)]
    assert changed == [[True, True], [False, False]]


def test_environments_of_a_hand_made_pair_of_predictors():
    algo = make_xrm(10)
    set_head(algo, 0, [[1, 0], [0, 1]], [0, 0])    # A: argmax of x
    set_head(algo, 1, [[1, 0], [0, 1]], [0.5, 0])  # B: class 1 only if x1 > x0 + 0.5
    x = torch.tensor([[1, 0], [0, 1], [0.2, 0.5], [0, 1], [1, 0]], dtype=torch.float)
    y = torch.tensor([0, 1, 1, 0, 1])
    # A right, B right | both right | A right, B wrong | both wrong | both wrong
    algo.eval()
    assert algo.environments(x, y).tolist() == [0, 0, 1, 1, 1]
    algo.labels.fill_(1)  # stored (flipped) labels play no part: the original ones are passed in
    assert algo.environments(x, y).tolist() == [0, 0, 1, 1, 1]


def test_each_example_is_assigned_once_to_a_twin_with_probability_one_half():
    algo = make_xrm(10000)
    assert set(algo.assign.unique().tolist()) == {0, 1}
    assert float(algo.assign.float().mean()) == pytest.approx(0.5, abs=0.02)
    assert "assign" in algo.state_dict() and "labels" in algo.state_dict()
