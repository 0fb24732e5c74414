"""Probe trials end to end on colored_digits: a small CNN, random or briefly trained, probed at
every layer; the transfer protocol scores the stored predictions through collect."""
import json

import numpy as np
import pytest

from harness.core import config as configs
from harness.core import files
from harness.core.errors import HarnessError
from harness.protocols.base import protocol
from harness.protocols.selection import choose
from harness.reports import collect
from harness.runs import features
from harness.runs import probe as probes
from harness.sweeps.launchers import Local
from harness.sweeps.planner import Planner, resolved_run, run_plan

CNN = ["backbone.name=cnn", "backbone.options.channels=[4,8,8]"]
LAYERS = ["block1", "block2", "block3", "output"]


def probe_cfg(tmp_path, *extra):
    return configs.load(None, [f"output_dir={tmp_path / 'runs'}", "steps=30", "eval_every=30", "device=cpu", *CNN,
                               "probe.tasks=[digits_colour, digits]", "probe.cs=[0.01, 1.0]", "probe.knn_k=5",
                               *extra])


def probed(cfg):
    """A probe run after its pretraining run, through the planner (as `harness probe` does)."""
    report = run_plan(Planner([resolved_run("probe", cfg)]), Local())
    assert report.ok, report
    return configs.run_dir(cfg)


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("probe")
    return probes.probe(probe_cfg(tmp_path, "probe.init=random"), progress=False)


def test_a_random_network_is_probed_at_every_layer_on_every_task(random_run):
    info = json.loads((random_run / "info.json").read_text())
    assert info["protocol"] == "transfer" and info["source"] is None and info["layers"] == LAYERS
    for task in ("digits_colour", "digits"):
        assert sorted(p.stem for p in (random_run / "predictions" / task).glob("*.npz")) == sorted(LAYERS)
    arrays = files.load_arrays(random_run / "predictions" / "digits_colour" / "output.npz")
    assert set(arrays["test.y"].tolist()) == {0, 1} and len(arrays["test.ids"]) == len(arrays["test.probe"])
    assert arrays["val.probe_by_c"].shape == (2, len(arrays["val.y"]))
    for name in ("done", "spectrum.png", "cka.png", "cka.json"):
        assert (random_run / name).exists(), name
    cka = json.loads((random_run / "cka.json").read_text())["digits"]
    assert cka["layers"] == LAYERS and np.allclose(np.diag(cka["matrix"]), 1.0)


def test_collect_scores_probe_runs_per_task_and_layer(random_run):
    frame = collect.load_runs([random_run])
    assert len(frame) == 2 * len(LAYERS)
    assert set(frame["dataset"]) == {"digits_colour", "digits"} and set(frame["layer"]) == set(LAYERS)
    assert set(frame["pretrain_dataset"]) == {"colored_digits"} and set(frame["init"]) == {"random"}
    row = frame[(frame["dataset"] == "digits_colour") & (frame["layer"] == "output")].iloc[0]
    arrays = files.load_arrays(random_run / "predictions" / "digits_colour" / "output.npz")
    assert row["test.probe_acc"] == pytest.approx(np.mean(arrays["test.probe"] == arrays["test.y"]))
    assert row["test.knn_acc"] == pytest.approx(np.mean(arrays["test.knn"] == arrays["test.y"]))
    # the colour sits in which channel holds the image: linearly readable even from random features
    assert row["test.probe_acc"] > 0.95
    # 10 digits from 4-8 globally pooled random conv channels: little shape survives the pooling,
    # yet above chance (0.1; 600 test digits, s.e. 0.012)
    digits = frame[frame["dataset"] == "digits"]
    assert digits["test.probe_acc"].max() > 0.15
    assert (frame["train.rankme"] >= 1).all() and (frame["train.rankme"] <= 8 + 1e-6).all()


def test_the_rule_picks_the_best_layer_on_validation_when_layer_is_not_a_key(random_run):
    frame = collect.load_runs([random_run])
    scorer = protocol("transfer")
    per_layer = choose(frame, scorer.rule("val-probe"), ["algorithm", "dataset", "init", "layer"])
    assert len(per_layer) == len(frame)
    best = choose(frame, scorer.rule("val-probe"), ["algorithm", "dataset", "init"])
    assert len(best) == 2
    for _, row in best.iterrows():
        task = frame[frame["dataset"] == row["dataset"]]
        assert row["val.probe_acc"] == task["val.probe_acc"].max()


def test_stored_predictions_that_disagree_with_validation_are_refused(random_run):
    arrays = files.load_arrays(random_run / "predictions" / "digits_colour" / "block1.npz")
    scorer = protocol("transfer")
    assert scorer.scores(arrays, {})["val"]["C"] in (0.01, 1.0)
    arrays["val.probe"] = 1 - arrays["val.probe"]  # predictions no candidate C made
    with pytest.raises(HarnessError, match="not those of the C that validation chooses"):
        scorer.scores(arrays, {})


def test_a_trained_network_is_its_pretraining_run_and_features_come_from_the_cache(tmp_path, monkeypatch):
    cfg = probe_cfg(tmp_path, "probe.tasks=[digits_colour]")
    calls = []
    real = features.encode_layers
    monkeypatch.setattr(features, "encode_layers", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    out = probed(cfg)
    plain = configs.load(None, [f"output_dir={tmp_path / 'runs'}", "steps=30", "eval_every=30", "device=cpu", *CNN])
    source = tmp_path / "runs" / configs.config_hash(plain)
    assert json.loads((out / "info.json").read_text())["source"] == source.name and (source / "done").exists()
    assert calls == [LAYERS] * 3, "every layer of a split from one pass over its batches"
    # another probe run of the same network (other C grid) reads every feature from the cache
    calls.clear()
    probed(probe_cfg(tmp_path, "probe.tasks=[digits_colour]", "probe.cs=[1.0]"))
    assert calls == []
    trained = collect.load_runs([out])
    assert trained.set_index("layer").loc["output", "test.probe_acc"] > 0.9


def test_the_default_config_hash_is_unchanged_by_the_probe_section():
    assert "probe" not in configs.identity(configs.resolve({}))
    assert configs.config_hash(configs.resolve({"probe": {"tasks": ["digits"]}})) != \
        configs.config_hash(configs.resolve({}))
    same = configs.resolve({"probe": {"tasks": ["digits"], "batch_size": 7}})
    assert configs.config_hash(same) == configs.config_hash(configs.resolve({"probe": {"tasks": ["digits"]}}))


@pytest.mark.parametrize("override, message", [
    ("probe.tasks=[nope]", "unknown downstream task 'nope'"),
    ("probe.layers=[block9]", "unknown probe.layers entry 'block9'; accepted: block1, block2, block3, output"),
    ("probe.init=pretrained", "probe.init must be one of trained, random"),
    ("probe.cs=[0]", "each item of probe.cs must be a finite number > 0, got 0"),
    ("probe.cs=[]", "probe.cs must be a non-empty list of finite numbers > 0, got \\[\\]"),
    ("probe.tasks=[3]", "each item of probe.tasks must be a downstream task or a mapping with keys name, options, "
                        "got 3"),
    ("probe.tasks=[{name: digits, colour: 1}]", "each item of probe.tasks must be a downstream task or a mapping"),
    ("probe.knn_k=0", "probe.knn_k must be an integer >= 1, got 0"),
    ("probe.colour=1", "unknown probe key 'probe.colour'; accepted: probe.tasks"),
])
def test_bad_probe_input_names_what_is_accepted_and_writes_nothing(tmp_path, override, message):
    with pytest.raises(HarnessError, match=message):
        probes.probe(probe_cfg(tmp_path, "probe.init=random", override), progress=False)
    assert not (tmp_path / "runs").exists()


def test_the_probe_command_prints_accuracy_per_layer_and_task(tmp_path, capsys):
    from harness.cli import main

    args = ["probe", f"output_dir={tmp_path}", "device=cpu", *CNN, "probe.tasks=[digits_colour]", "probe.init=random",
            "probe.cs=[1.0]", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "digits_colour" in out and "block2" in out and "RankMe" in out and "run folder:" in out
    assert main(["probe", f"output_dir={tmp_path / 'none'}"]) == 2
    assert "probe.tasks is not set" in capsys.readouterr().err and not (tmp_path / "none").exists()
