import math

import pytest
import torch
from torch import nn

from harness.cli import main
from harness.core.registry import ALGORITHMS
from harness.models.algorithm import Batch
from harness.models.backbones import Backbone


def make_jtt(**hp):
    entry = ALGORITHMS.get("jtt")
    hparams = {k: v.default for k, v in entry.hparams.items()} | hp
    torch.manual_seed(0)
    return entry.obj(lambda: Backbone(nn.Flatten(), n_outputs=2), 2, 0, hparams, 10)


def set_bias(linear, bias):
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor(bias))


def hand_made_batch():
    y = torch.tensor([0, 1, 1])
    return Batch(torch.zeros(3, 2), y, torch.full_like(y, -1), torch.tensor([4, 7, 2]))


def test_stage_one_trains_only_the_identification_model():
    algo = make_jtt(id_steps=5, lr=1e-2)
    final = [p.detach().clone() for p in algo.classifier.parameters()]
    ident = [p.detach().clone() for p in algo.identifier.parameters()]
    algo.update(hand_made_batch(), step=4)
    assert all(torch.equal(a, b) for a, b in zip(final, algo.classifier.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(ident, algo.identifier.parameters()))
    assert torch.all(algo.error == -1)


def test_stage_two_upweights_the_identification_models_errors():
    algo = make_jtt(id_steps=0, lambda_up=20.0, lr=0.0)
    set_bias(algo.identifier[1], [5.0, 0.0])  # the identification model always says class 0
    set_bias(algo.classifier, [1.0, 0.0])     # the final model: p(class 0) = sigmoid(1)
    logs = algo.update(hand_made_batch(), step=0)
    assert algo.error.tolist() == [-1, -1, 1, -1, 0, -1, -1, 1, -1, -1]  # by position in the train split
    right, wrong = -math.log(1 / (1 + math.exp(-1))), -math.log(1 / (1 + math.exp(1)))
    assert float(logs["loss"]) == pytest.approx((right + 20 * 2 * wrong) / (1 + 20 * 2), rel=1e-5)


def test_a_run_too_short_for_the_final_model_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "algorithm.name=jtt", "steps=300", f"output_dir={out}"]) == 2  # id_steps 500 by default
    assert "jtt's id_steps (500) must be below steps (300)" in capsys.readouterr().err
    assert not out.exists()
