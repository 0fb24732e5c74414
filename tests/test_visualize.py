"""The RCDM visualizer: the conditioned diffusers UNet (harness.models.rcdm), its training loop's
exact resume, DDIM sampling, the visualization protocol's scores on constructed cases, and the
visualize trial end to end on colored_digits (a small CNN, briefly trained; a tiny UNet)."""
import json

import numpy as np
import pytest
import torch

from harness.core import config as configs
from harness.core.errors import HarnessError
from harness.models.rcdm import RCDM
from harness.protocols.visualization import disagreement, factor_scores, retrieval_scores
from harness.reports import collect
from harness.runs import visualize as visualizer

SHAPE = (3, 8, 8)
CNN = ["backbone.name=cnn", "backbone.options.channels=[4,8,8]", "algorithm.name=simclr"]
TINY = "{channels: [8, 16], steps: 6, batch_size: 8, sampling_steps: 2, n_images: 6, k_samples: 2, image_size: 8}"


def tiny_model(seed: int = 0, rep_dim: int = 5) -> RCDM:
    torch.manual_seed(seed)
    return RCDM(rep_dim, SHAPE, [8, 16], train_timesteps=50)


def test_the_representation_changes_the_prediction():
    model = tiny_model().eval()
    x, t = torch.randn(4, *SHAPE), torch.tensor([3, 10, 20, 40])
    rep = torch.randn(4, 5)
    with torch.no_grad():
        zero, given, again = model(x, t, torch.zeros(4, 5)), model(x, t, rep), model(x, t, rep)
    assert torch.equal(given, again)
    assert (zero - given).abs().mean() > 1e-4


def test_a_scale_and_shift_from_the_representation_reaches_every_residual_block():
    from diffusers.models.resnet import ResnetBlock2D

    model = tiny_model().eval()
    blocks = [m for m in model.unet.modules() if isinstance(m, ResnetBlock2D)]
    assert len(blocks) >= 5  # two per level down, two per level up... and the middle's
    seen = {}
    for i, block in enumerate(blocks):
        assert block.time_embedding_norm == "scale_shift"
        assert block.time_emb_proj.out_features == 2 * block.norm2.num_channels  # a scale and a shift per channel
        block.time_emb_proj.register_forward_hook(lambda m, inp, out, i=i: seen.setdefault(i, []).append(out))
    x, t = torch.randn(2, *SHAPE), torch.tensor([5, 5])
    with torch.no_grad():
        model(x, t, torch.zeros(2, 5))
        model(x, t, torch.ones(2, 5))
    assert sorted(seen) == list(range(len(blocks)))
    for i, (zero, one) in seen.items():
        assert not torch.allclose(zero, one), f"residual block {i} does not see the representation"


def test_training_resumes_exactly_from_its_checkpoint(tmp_path, monkeypatch):
    images, reps = torch.rand(20, *SHAPE) * 2 - 1, torch.randn(20, 5)
    spec = {"steps": 5, "batch_size": 4, "drop": 0.25, "checkpoint_every": 2}

    def trained(path):
        model = tiny_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses = visualizer.fit(model, optimizer, images, reps, spec, path, seed=3)
        return model, losses

    whole, whole_losses = trained(tmp_path / "a.pt")
    calls, real = [], RCDM.loss

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RCDM, "loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trained(tmp_path / "b.pt")
    monkeypatch.setattr(RCDM, "loss", real)
    assert torch.load(tmp_path / "b.pt", weights_only=True)["step"] == 2
    resumed, resumed_losses = trained(tmp_path / "b.pt")
    assert resumed_losses == whole_losses
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_ddim_sampling_is_deterministic_for_a_seed():
    model = tiny_model().eval()
    rep = torch.randn(3, 5)

    def draw(seed):
        return model.sample(rep, 3, torch.Generator().manual_seed(seed), SHAPE)

    first, second, other = draw(1), draw(1), draw(2)
    assert first.shape == (3, *SHAPE) and first.abs().max() <= 1
    assert torch.equal(first, second) and not torch.equal(first, other)
    with pytest.raises(HarnessError, match="sampling steps must be a positive integer, got 0"):
        model.sample(rep, 0, torch.Generator(), SHAPE)


def retrieval_arrays(conditioning, samples, k):
    rng = np.random.RandomState(0)
    return {"conditioning": conditioning, "samples": samples, "shuffled": samples[rng.permutation(len(samples))],
            "unconditional": rng.randn(*samples.shape), "mean": np.zeros(conditioning.shape[1]),
            "spread": np.ones(conditioning.shape[1]), "k": np.array(k)}


def test_samples_that_keep_their_representation_retrieve_it_and_a_constant_one_scores_chance():
    rng = np.random.RandomState(1)
    n, k, d = 20, 3, 16
    cond = rng.randn(n, d)
    faithful = retrieval_scores(retrieval_arrays(cond, np.repeat(cond, k, 0) + 0.05 * rng.randn(n * k, d), k), k)
    assert faithful["top1"] > 0.95 and faithful["top5"] == 1.0
    assert faithful["shuffled_top1"] < 0.3 and faithful["unconditional_top1"] < 0.3
    constant = retrieval_scores(retrieval_arrays(np.ones((n, d)), np.ones((n * k, d)), k), k)
    assert constant["top1"] == pytest.approx(1 / n) and constant["top5"] == pytest.approx(5 / n)
    assert constant["chance_top1"] == pytest.approx(1 / n)


def test_retention_and_disagreement_count_what_the_samples_keep():
    truth = np.array([0, 1, 2])
    arrays = {"truth": truth, "real": np.array([0, 1, 1]), "samples": np.array([0, 0, 1, 1, 2, 0]),
              "shuffled": np.array([1, 1, 0, 0, 0, 0]), "unconditional": np.array([0, 1, 0, 1, 0, 1])}
    scores = factor_scores(arrays, 2)
    assert scores["real_acc"] == pytest.approx(2 / 3) and scores["retention"] == pytest.approx(5 / 6)
    assert scores["shuffled_retention"] == 0 and scores["unconditional_retention"] == pytest.approx(2 / 6)
    assert scores["disagreement"] == pytest.approx(1 / 3) and scores["unconditional_disagreement"] == 1
    assert disagreement(np.array([4, 4, 4, 1, 2, 3]), 3) == pytest.approx(0.5)


def visualize_cfg(tmp_path, *extra):
    return configs.load(None, [f"output_dir={tmp_path / 'runs'}", "steps=4", "eval_every=4", "device=cpu", *CNN,
                               f"visualize={TINY}", *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from harness.cli import main

    tmp_path = tmp_path_factory.mktemp("visualize")
    cfg = visualize_cfg(tmp_path, "visualize.layer=output")
    args = ["visualize", f"output_dir={tmp_path / 'runs'}", "steps=4", "eval_every=4", "device=cpu", *CNN,
            f"visualize={TINY}", "visualize.layer=output", "--no-progress"]
    assert main(args) == 0
    return tmp_path, cfg, configs.run_dir(cfg)


def test_a_visualize_run_trains_after_its_pretraining_and_collect_scores_it(finished, capsys):
    tmp_path, cfg, out = finished
    info = json.loads((out / "info.json").read_text())
    source = configs.run_dir(visualizer.pretraining_config(cfg))
    assert info["source"] == source.name and (source / "done").exists() and (out / "done").exists()
    assert info["factors"] == ["class", "colour", "y"] and info["layer"] == "output"
    for picture in ("grid.png", "interpolation.png"):
        assert (out / picture).stat().st_size > 0
    assert collect.vet([out], named_by_hash=True) == ([out], []), "collect trusts it (its manifest checks out)"
    frame = collect.load_runs([out]).set_index("factor")
    assert list(frame.index) == ["-", "class", "colour", "y"]
    assert frame.loc["-", "test.chance_top1"] == pytest.approx(1 / 6)
    assert 0 <= frame.loc["class", "test.disagreement"] <= 1
    # a rerun finds the trial done; its stored samples are what the pictures show
    assert visualizer.visualize(cfg) == out


def test_the_visualize_command_prints_retrieval_and_factors(finished, capsys):
    from harness.cli import main

    tmp_path, cfg, out = finished
    source = configs.run_dir(visualizer.pretraining_config(cfg))
    assert main(["visualize", "--run", str(source), f"visualize={TINY}", "visualize.layer=output",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "retrieval top-1" in printed and "colour" in printed and str(out) in printed


def test_the_default_config_hash_is_unchanged_by_the_visualize_section():
    assert "visualize" not in configs.identity(configs.resolve({}))
    given = configs.resolve({"visualize": {"layer": "output"}})
    assert configs.config_hash(given) != configs.config_hash(configs.resolve({}))
    same = configs.resolve({"visualize": {"layer": "output", "checkpoint_every": 7}})
    assert configs.config_hash(same) == configs.config_hash(given)


@pytest.mark.parametrize("override, message", [
    ("visualize.layer=block9", "unknown visualize.layer 'block9'; accepted: block1, block2, block3, "
                               "backbone, projector1, output"),
    ("visualize.image_size=13", "image size 13 is not divisible by 2"),
    ("visualize={channels: [8, 16, 32, 64], image_size: 12}", "halves the image 3 times; image size 12 is not "
                                                             "divisible by 8"),
    ("visualize.sampling_steps=0", "visualize.sampling_steps must be an integer >= 1, got 0"),
    ("visualize.drop=1", "visualize.drop must be"),
])
def test_bad_visualize_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, override, message):
    from harness.cli import main

    args = ["visualize", f"output_dir={tmp_path / 'runs'}", "device=cpu", *CNN, f"visualize={TINY}", override,
            "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and __import__("re").search(message, err), err
    assert not (tmp_path / "runs").exists()


def test_a_folder_that_is_not_a_finished_pretraining_is_refused(tmp_path, finished, capsys):
    from harness.cli import main

    _, _, out = finished
    (tmp_path / "empty").mkdir()
    for folder, message in ((tmp_path / "empty", "is not a finished pretraining run folder"),
                            (out, "is a visualize run, not a pretraining run")):
        assert main(["visualize", "--run", str(folder), "--no-progress"]) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"] and not any((tmp_path / "empty").iterdir())


def test_a_visualize_sweep_plans_one_pretraining_for_the_layers_of_one_network(tmp_path):
    from harness.sweeps import sweep

    spec = sweep.parse_spec({"name": "vis", "datasets": ["colored_digits"], "kind": "visualize", "seeds": 1,
                             "algorithms": [{"name": "simclr", "axes": {"visualize.layer": ["backbone", "output"]}}],
                             "overrides": {"steps": 4, "backbone.name": "cnn", "visualize.steps": 2}})
    trials, waiting = sweep.Plan(spec, tmp_path / "vis").trials()
    assert waiting == []
    [pre] = [t for t in trials if t.kind == "train"]
    shown = [t for t in trials if t.kind == "visualize"]
    assert sorted(t.cfg["visualize"]["layer"] for t in shown) == ["backbone", "output"]
    assert all(t.needs == (pre.hash,) for t in shown) and pre.cfg["visualize"] is None
