import sys

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


LAYERS = [
    ("mlp", (2, 4, 4), {"width": 8, "depth": 3}, {"hidden1": 8, "hidden2": 8, "output": 8}),
    ("cnn", (3, 8, 8), {"channels": (4, 6, 8)}, {"block1": 4, "block2": 6, "block3": 8, "output": 8}),
    ("identity", (5,), {}, {"output": 5}),
    ("text:50", (2, 7), {"embed_dim": 6, "width": 5, "depth": 2}, {"embedding": 6, "hidden1": 5, "output": 5}),
    ("timm:resnet18", (3, 32, 32), {},
     {"act1": 64, "layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512, "output": 512}),
    ("vit", (2, 8, 8), {"width": 8, "depth": 2, "heads": 2}, {"block1": 8, "block2": 8, "output": 8}),
    ("vit", (1, 6, 6), {"patch_size": 3, "width": 8, "depth": 2, "heads": 2, "class_token": True},
     {"block1": 8, "block1_cls": 8, "block2": 8, "block2_cls": 8, "output": 8}),
]


def inputs(name: str, shape: tuple[int, ...], n: int = 3) -> torch.Tensor:
    """Random images, or token ids with attention masks of random lengths (padding id 0)."""
    gen = torch.Generator().manual_seed(0)
    if name.startswith(("text:", "hf:")):
        ids = torch.randint(1, 50, (n, shape[1]), generator=gen)
        mask = (torch.arange(shape[1]) < torch.randint(1, shape[1] + 1, (n, 1), generator=gen)).long()
        return torch.stack([ids * mask, mask], 1)
    return torch.randn(n, *shape, generator=gen)


def calls(module: torch.nn.Module) -> list:
    """A list that grows by one each time ``module`` runs forward."""
    seen: list = []
    module.register_forward_hook(lambda *args: seen.append(1))
    return seen


@pytest.mark.parametrize("name, shape, options, dims", LAYERS)
def test_layers_are_named_shallow_to_deep_with_their_widths(name, shape, options, dims):
    net = backbone_factory(name, shape, options)().eval()
    assert net.layer_names == list(dims) and net.layer_dims == dims
    features = net.intermediates(inputs(name, shape), net.layer_names)
    assert {k: v.shape for k, v in features.items()} == {k: (3, d) for k, d in dims.items()}


@pytest.mark.parametrize("name, shape, options, dims", LAYERS)
def test_one_pass_gives_each_layer_as_separate_calls_do(name, shape, options, dims):
    net = backbone_factory(name, shape, options)().eval()
    x = inputs(name, shape)
    first = calls(next(m for m in net.modules() if not list(m.children())))  # the first leaf module
    with torch.no_grad():
        together = net.intermediates(x, list(reversed(net.layer_names)))  # order of the request is free
        assert len(first) == 1  # one forward for all layers
        for layer in net.layer_names:
            assert torch.allclose(together[layer], net.intermediates(x, [layer])[layer], atol=1e-5)
        assert torch.allclose(together["output"], net(x), atol=1e-5)


def test_layers_are_what_the_blocks_compute_pooled():
    net = backbone_factory("cnn", (3, 8, 8), {"channels": (4, 6, 8)})().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        got = net.intermediates(x, ["block2", "block1"])
        assert torch.allclose(got["block1"], net[0](x).mean((2, 3)))
        assert torch.allclose(got["block2"], net[1](net[0](x)).mean((2, 3)))
    timm_net = backbone_factory("timm:resnet18", (3, 32, 32), {})().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = timm_net.forward_intermediates(x, intermediates_only=True)
        got = timm_net.intermediates(x, ["layer2", "act1"])
    assert torch.allclose(got["layer2"], maps[2].mean((2, 3)), atol=1e-5)
    assert torch.allclose(got["act1"], maps[0].mean((2, 3)), atol=1e-5)


@pytest.mark.parametrize("name, shape, options, shallow, deeper", [
    ("cnn", (3, 8, 8), {}, "block2", lambda net: net[2]),
    ("mlp", (2, 4, 4), {"width": 8, "depth": 3}, "hidden1", lambda net: net[2]),
    ("text:50", (2, 7), {"depth": 2}, "embedding", lambda net: net[1]),
    ("timm:resnet18", (3, 32, 32), {}, "layer2", lambda net: net.layer3),
    ("vit", (2, 8, 8), {"width": 8, "depth": 3, "heads": 2}, "block2", lambda net: net.blocks[2]),
])
def test_intermediates_stop_after_the_deepest_layer_asked_for(name, shape, options, shallow, deeper):
    net = backbone_factory(name, shape, options)().eval()
    skipped = calls(deeper(net))
    with torch.no_grad():
        net.intermediates(inputs(name, shape), [shallow])
        assert skipped == []
        net.intermediates(inputs(name, shape), [shallow, "output"])
    assert skipped == [1]


@pytest.mark.parametrize("name, shape", [("cnn", (3, 8, 8)), ("timm:resnet18", (3, 32, 32))])
def test_an_unknown_layer_names_the_accepted_ones(name, shape):
    net = backbone_factory(name, shape, {})()
    with pytest.raises(HarnessError, match=r"unknown layer 'block9'; accepted: (block1, .*|act1, layer1, .*), output$"):
        net.intermediates(inputs(name, shape), ["output", "block9"])


def test_text_backbone_averages_the_tokens_the_mask_keeps():
    net = backbone_factory("text:50", (2, 5), {"depth": 0})().eval()
    x = torch.tensor([[[7, 9, 9, 0, 0], [1, 1, 1, 0, 0]]])
    table = net[0].bag.weight
    assert torch.allclose(net(x), (table[7] + 2 * table[9]) / 3)
    padded_otherwise = x.clone()
    padded_otherwise[0, 0, 3:] = 42  # another padding id changes nothing: the mask says what is text
    assert torch.allclose(net(padded_otherwise), net(x))


def test_text_backbone_learns_a_separable_token_task():
    torch.manual_seed(0)
    x = inputs("text:50", (2, 12), n=64)
    y = torch.arange(64) % 2
    x[:, 0, 0] = 40 + y  # the first token says the class; the rest is noise
    net = backbone_factory("text:50", (2, 12), {})()
    model = torch.nn.Sequential(net, torch.nn.Linear(net.n_outputs, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0.6 and losses[-1] < 0.05
    assert (model(x).argmax(1) == y).all()


@pytest.mark.parametrize("name, message", [
    ("text", "backbone 'text' needs its vocab_size: write text:<vocab_size>"),
    ("text:many", "write text:<vocab_size>, a positive integer"),
    ("hf:", "backbone 'hf:' needs its model: write hf:<model>"),
])
def test_family_names_need_their_argument(name, message):
    with pytest.raises(HarnessError, match=message):
        backbone_factory(name, (2, 5), {})


def test_text_backbones_refuse_image_inputs():
    with pytest.raises(HarnessError, match=r"reads token ids and attention masks.*shape \(3, 8, 8\)"):
        backbone_factory("text:50", (3, 8, 8), {})()


def test_hf_backbone_mean_pools_a_local_model_and_names_its_hidden_states(tiny_bert):
    from transformers import AutoModel

    net = backbone_factory(f"hf:{tiny_bert}", (2, 7), {})().eval()
    assert net.n_outputs == 32
    assert net.layer_names == ["embedding", "hidden1", "hidden2", "output"]
    assert set(net.layer_dims.values()) == {32}
    x = inputs("hf:", (2, 7))
    mask = x[:, 1].unsqueeze(-1).float()
    reference = AutoModel.from_pretrained(tiny_bert).eval()
    runs = calls(net.model.embeddings)
    with torch.no_grad():
        states = reference(input_ids=x[:, 0], attention_mask=x[:, 1], output_hidden_states=True).hidden_states
        together = net.intermediates(x, net.layer_names)
        assert len(runs) == 1
        for layer, state in zip(net.layer_names, states):
            assert torch.allclose(together[layer], (state * mask).sum(1) / mask.sum(1), atol=1e-5)
        assert torch.allclose(together["output"], together["hidden2"]) and torch.allclose(net(x), together["output"])
    out = net(x)
    out.sum().backward()  # trainable: gradients reach the embeddings
    assert net.model.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_hf_backbone_without_the_model_or_transformers_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    with pytest.raises(HarnessError, match="'.*nowhere' is neither in the local cache nor a local folder"):
        backbone_factory(f"hf:{tmp_path / 'nowhere'}", (2, 7), {})()
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails, as when not installed
    with pytest.raises(HarnessError, match=r"needs `transformers`.*pip install '\.\[text\]'"):
        backbone_factory("hf:bert-base-uncased", (2, 7), {})()


def test_family_backbones_resolve_in_configs(tiny_bert):
    from harness.core import config as configs

    cfg = configs.resolve({"backbone": {"name": "text:30522", "options": {"embed_dim": 16}}})
    assert cfg["backbone"]["options"] == {"embed_dim": 16}
    with pytest.raises(HarnessError, match="unknown option \\(backbone.options.vocab_size\\)"):
        configs.resolve({"backbone": {"name": "text:30522", "options": {"vocab_size": 3}}})
    with pytest.raises(HarnessError, match="unknown backbone 'bert'"):
        configs.resolve({"backbone": {"name": "bert"}})
    configs.resolve({"backbone": {"name": f"hf:{tiny_bert}"}})


def test_domainbed_mnist_cnn_dims_layers_and_parameter_count():
    from harness.models.backbones import parameter_count

    net = backbone_factory("domainbed_mnist_cnn", (2, 28, 28), {})().eval()
    x = torch.randn(3, 2, 28, 28)
    assert net(x).shape == (3, 128) and net.n_outputs == 128
    assert net.layer_dims == {"conv1": 64, "conv2": 128, "conv3": 128, "conv4": 128, "output": 128}
    assert net.intermediates(x, ["conv2"])["conv2"].shape == (3, 128)
    assert net[1][0].stride == (2, 2) and net[2][0].stride == (1, 1)  # only the second conv halves the map
    assert isinstance(net[0][1], torch.nn.ReLU) and net[0][2].num_groups == 8  # ReLU, then GroupNorm(8)
    convs = 2 * 64 * 9 + 64 + 64 * 128 * 9 + 128 + 2 * (128 * 128 * 9 + 128)
    norms = 2 * (64 + 3 * 128)
    assert parameter_count("domainbed_mnist_cnn", (2, 28, 28), {}) == convs + norms == 371136


def vit_net(**options):
    return backbone_factory("vit", (2, 8, 8), {"width": 8, "depth": 2, "heads": 2, **options})().eval()


@pytest.mark.parametrize("class_token", [False, True])
def test_vit_layers_are_each_blocks_mean_patch_token_and_class_token(class_token):
    net = vit_net(class_token=class_token)
    x = torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        got = net.intermediates(x, net.layer_names)
        t = net.norm_pre(net._pos_embed(net.patch_embed(x)))
        prefix = 1 if class_token else 0
        for i, block in enumerate(net.blocks, 1):
            t = block(t)
            assert torch.allclose(got[f"block{i}"], t[:, prefix:].mean(1), atol=1e-6)
            if class_token:
                assert torch.allclose(got[f"block{i}_cls"], t[:, 0], atol=1e-6)
        final = net.norm(t)
        assert torch.allclose(got["output"], final[:, 0] if class_token else final.mean(1), atol=1e-6)


@pytest.mark.parametrize("class_token", [False, True])
def test_vit_tokens_see_only_the_kept_patches(class_token):
    net = vit_net(class_token=class_token)
    x = torch.randn(2, 2, 8, 8)
    keep = torch.tensor([[0, 5, 10, 15], [1, 2, 3, 12]])  # of the 4x4 grid of 2x2 patches
    with torch.no_grad():
        whole = net.tokens(x)
        assert whole.shape == (2, 16, 8) and net.grid == (4, 4)
        if not class_token:
            assert torch.allclose(whole.mean(1), net(x), atol=1e-6)
        some = net.tokens(x, keep)
        assert some.shape == (2, 4, 8)
        y = x.clone()
        y[0, :, 2:4, 0:2] += 1.0  # patch 4 (row 1, column 0): not kept by example 0
        assert torch.allclose(net.tokens(y, keep)[0], some[0], atol=1e-6)
        y[0, :, 0:2, 0:2] += 1.0  # patch 0: kept
        assert not torch.allclose(net.tokens(y, keep)[0], some[0], atol=1e-4)
        assert torch.allclose(net.tokens(x, torch.arange(16).repeat(2, 1)), whole, atol=1e-6)


@pytest.mark.parametrize("name, shape, options, message", [
    ("vit", (2, 8, 8), {"patch_size": 3}, "backbone option patch_size: 3 does not divide the image size 8x8"),
    ("vit", (2, 8, 8), {"width": 10, "heads": 4}, "backbone option heads: 4 does not divide the width 10"),
    ("timm:vit_tiny_patch16_224", (3, 40, 40), {}, "patch_size: 16 does not divide the image size 40x40"),
])
def test_vit_refuses_patches_that_do_not_tile_the_image(name, shape, options, message):
    with pytest.raises(HarnessError, match=message):
        backbone_factory(name, shape, options)()


def test_timm_vits_have_block_layers_token_access_and_the_inputs_size():
    from harness.models.backbones import parameter_count

    net = backbone_factory("timm:vit_tiny_patch16_224", (3, 32, 32), {})().eval()
    assert net.grid == (2, 2) and net.layer_names[:3] == ["block1", "block1_cls", "block2"]
    assert len(net.layer_names) == 2 * 12 + 1 and net.layer_dims["output"] == 192
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = net.intermediates(x, ["block12_cls", "output"])
        assert torch.allclose(got["output"], net(x), atol=1e-5)
        assert net.tokens(x, torch.tensor([[0, 3], [1, 2]])).shape == (2, 2, 192)
    assert parameter_count("timm:vit_tiny_patch16_224", (3, 32, 32), {}) == sum(p.numel() for p in net.parameters())


def test_options_vit_shares_with_the_mlp_keep_their_meaning_under_backbone_auto():
    from harness.core import config

    cfg = config.load(None, ["backbone.options.depth=0", "backbone.options.width=16"])  # the MLP's, for colored_digits
    assert cfg["backbone"]["options"] == {"depth": 0, "width": 16}
