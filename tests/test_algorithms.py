import math

import pytest
import torch
from torch import nn

from harness.core.registry import ALGORITHMS
from harness.models.algorithm import Batch
from harness.models.backbones import Backbone
from harness.models.shared import group_means


def linear_backbone():
    return Backbone(nn.Flatten(), n_outputs=2)


def make(name, num_groups=3, train_size=10, **hp):
    entry = ALGORITHMS.get(name)
    hparams = {k: v.default for k, v in entry.hparams.items()} | hp
    torch.manual_seed(0)
    return entry.obj(linear_backbone, 2, num_groups, hparams, train_size)


def test_group_dro_weight_update_on_a_hand_made_batch():
    algo = make("group_dro", num_groups=3, eta=0.5, lr=0.0)
    with torch.no_grad():  # logits = 0 everywhere: every loss is log 2
        algo.classifier.weight.zero_()
        algo.classifier.bias.zero_()
    x = torch.zeros(4, 2)
    y = torch.tensor([0, 1, 0, 1])
    g = torch.tensor([0, 0, 1, -1])  # group 2 absent, one example without a group
    logs = algo.update(Batch(x, y, g, torch.arange(4)), step=0)
    loss = math.log(2)
    raw = torch.tensor([math.exp(0.5 * loss), math.exp(0.5 * loss), 1.0]) / 3
    expected = raw / raw.sum()
    assert torch.allclose(algo.q, expected, atol=1e-6)
    assert float(logs["loss"]) == pytest.approx(float((expected * torch.tensor([loss, loss, 0.0])).sum()), rel=1e-5)


def test_group_means_average_within_groups_and_skip_examples_without_one():
    losses = torch.tensor([1.0, 3.0, 5.0, 7.0])
    means, present = group_means(losses, torch.tensor([0, 0, 2, -1]), 3)
    assert means.tolist() == [2.0, 0.0, 5.0]
    assert present.tolist() == [True, False, True]
    rows, _ = group_means(torch.tensor([[1.0, 2.0], [3.0, 6.0]]), torch.tensor([1, 1]), 2)
    assert rows.tolist() == [[0.0, 0.0], [2.0, 4.0]]


def test_reweighting_gives_every_group_the_same_mass():
    algo = make("rwg", num_groups=2)
    y = torch.tensor([0, 0, 0, 1])
    g = torch.tensor([0, 0, 0, 1])
    positions, weights = algo.sampling(y, g)
    assert positions is None
    assert weights[:3].sum() == pytest.approx(weights[3:].sum())


def test_class_reweighting_ignores_groups():
    algo = make("rwy")
    _, weights = algo.sampling(torch.tensor([0, 1, 1, 1]), torch.full((4,), -1))
    assert weights.tolist() == pytest.approx([1.0, 1 / 3, 1 / 3, 1 / 3])


def test_subsampling_cuts_every_group_to_the_smallest():
    algo = make("subg", num_groups=3)
    g = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])
    positions, weights = algo.sampling(torch.zeros(9, dtype=torch.long), g)
    assert weights is None
    assert torch.bincount(g[positions]).tolist() == [2, 2, 2]
    assert len(set(positions.tolist())) == 6


def test_which_algorithms_need_groups():
    needs = {n: ALGORITHMS.get(n).obj.needs_groups for n in ("erm", "group_dro", "rwg", "subg", "rwy", "suby")}
    assert needs == {"erm": False, "group_dro": True, "rwg": True, "subg": True, "rwy": False, "suby": False}
