"""The width knob (Expand or Narrow): the last block's output width of the small CNN and of timm
ResNets set to D, everything before it unchanged; the network trains; parameter counts recorded."""
from __future__ import annotations

import json

import pytest
import torch

from harness.core import config as configs
from harness.core.errors import HarnessError
from harness.models.backbones import backbone_factory, parameter_count
from harness.runs.run import train


def _trains(net, shape):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, *shape, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    head = torch.nn.Linear(net.n_outputs, 3)
    opt = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=0.05)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(head(net(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("spec, shape, width", [
    ("cnn", (1, 8, 8), 5), ("cnn", (1, 8, 8), 96),
    ("timm:resnet18", (3, 16, 16), 1024),
    ("timm:resnet50", (3, 16, 16), 256),  # bottleneck, with its own shortcut projection
])
def test_last_width_gives_the_requested_dimension_leaves_the_rest_and_trains(spec, shape, width):
    plain = backbone_factory(spec, shape, {})()
    net = backbone_factory(spec, shape, {"last_width": width})()
    assert net.n_outputs == width
    out = net(torch.randn(2, *shape))
    assert out.shape == (2, width)
    names = net.layer_names
    assert names == plain.layer_names
    last_block = names[-2]
    assert net.layer_dims[last_block] == net.layer_dims["output"] == width
    assert {k: v for k, v in net.layer_dims.items() if k not in (last_block, "output")} == \
        {k: v for k, v in plain.layer_dims.items() if k not in (last_block, "output")}
    feats = net.intermediates(torch.randn(2, *shape), names)
    assert {k: v.shape[1] for k, v in feats.items()} == net.layer_dims
    # everything outside the last block has the plain network's parameters' shapes
    block_prefix = "3." if spec == "cnn" else "layer4.1." if spec.endswith("18") else "layer4.2."
    same = {k: v.shape for k, v in plain.named_parameters() if not k.startswith(block_prefix)}
    assert {k: v.shape for k, v in net.named_parameters() if not k.startswith(block_prefix)} == same
    grows = parameter_count(spec, shape, {"last_width": width}) > parameter_count(spec, shape, {})
    assert grows == (width > plain.n_outputs)
    _trains(net, shape)


def test_last_width_refuses_a_model_outside_the_resnet_family():
    with pytest.raises(HarnessError, match="ResNet family"):
        backbone_factory("timm:vit_tiny_patch16_224", (3, 32, 32), {"last_width": 8})()


def test_a_run_records_parameter_counts(tmp_path):
    cfg = configs.load(None, [f"output_dir={tmp_path}", "steps=1", "eval_every=1", "backbone.name=cnn",
                              "backbone.options.channels=[4,4]", "backbone.options.last_width=6", "device=cpu"])
    info = json.loads((train(cfg, progress=False) / "info.json").read_text())
    want = sum(p.numel() for p in backbone_factory("cnn", (2, 14, 14), {"channels": (4, 4), "last_width": 6})()
               .parameters())
    assert info["parameters"]["backbone"] == want
    assert info["parameters"]["total"] == info["parameters"]["trainable"] == want + 6 * 2 + 2


def test_list_counts_backbone_parameters_at_a_shape_and_width(capsys):
    from harness.cli import main

    assert main(["list", "backbones", "--input-shape", "2,14,14", "--last-width", "6",
                 "--backbone", "timm:resnet18"]) == 0
    out = capsys.readouterr().out
    assert "parameters at 2x14x14, last_width=6" in out
    cnn = parameter_count("cnn", (2, 14, 14), {"last_width": 6})
    resnet = parameter_count("timm:resnet18", (2, 14, 14), {"last_width": 6})
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert rows["cnn"].rstrip().endswith(f"{cnn:,}")
    assert rows["timm:resnet18"].rstrip().endswith(f"{resnet:,}")
    assert rows["mlp"].rstrip().endswith(f"{parameter_count('mlp', (2, 14, 14), {}):,}")  # no last_width: as is
    assert "name one: hf:<model>" in rows["hf"]


def test_list_refuses_a_bad_input_shape(capsys):
    from harness.cli import main

    assert main(["list", "backbones", "--input-shape", "3x32"]) == 2
    assert "--input-shape must be positive integers separated by commas, like 3,32,32; got '3x32'" in \
        capsys.readouterr().err
