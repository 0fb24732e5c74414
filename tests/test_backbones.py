import pytest
import torch

from harness.core.errors import HarnessError
from harness.models.backbones import backbone_factory


@pytest.mark.parametrize("name, shape, options", [
    ("mlp", (2, 14, 14), {"width": 32}),
    ("cnn", (2, 14, 14), {}),
    ("identity", (12,), {}),
    ("timm:resnet18", (3, 32, 32), {}),
])
def test_backbones_output_n_outputs_features(name, shape, options):
    net = backbone_factory(name, shape, options)()
    out = net.eval()(torch.randn(3, *shape))
    assert out.shape == (3, net.n_outputs)


def test_the_factory_builds_independent_backbones():
    make = backbone_factory("mlp", (4,), {"width": 8})
    a, b = make(), make()
    assert a is not b and a[1][0].weight.data_ptr() != b[1][0].weight.data_ptr()


def test_unknown_timm_model_is_a_clear_error():
    with pytest.raises(HarnessError, match="unknown timm model 'resnet_nope'"):
        backbone_factory("timm:resnet_nope", (3, 32, 32), {})()


def test_timm_through_a_run_config(tiny_cfg):
    from harness.core.files import load_arrays, read_jsonl
    from harness.runs.run import train

    cfg = tiny_cfg("backbone.name=timm:resnet18", "backbone.options={}", "steps=4", "eval_every=4",
                   "dataset.options.test_fraction=0.05", "dataset.options.val_fraction=0.05")
    run = train(cfg)
    rows = read_jsonl(run / "results.jsonl")
    assert rows[-1]["step"] == 4 and 0.0 < rows[-1]["train_logs"]["loss"] < 10.0
    probs = load_arrays(run / "predictions" / "step_0000004.npz")["test.probs"]
    assert probs.shape == (rows[-1]["metrics"]["test"]["n"], 2)
