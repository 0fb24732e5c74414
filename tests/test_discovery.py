import json

import numpy as np
import pytest
import yaml

from harness.cli import main
from harness.core import config, files
from harness.core.errors import HarnessError
from harness.core.files import load_arrays, read_jsonl
from harness.core.registry import DATASETS
from harness.data.environments import best_discovery, load_environments, save_environments
from harness.runs.discovery import degenerate_classes, discover
from harness.runs.run import train


@pytest.fixture
def discovery_cfg(tmp_path):
    def make(*overrides: str) -> dict:
        return config.load(None, [f"output_dir={tmp_path / 'runs'}", "steps=60", "eval_every=20", "groups=none",
                                  "backbone.options.width=64", "algorithm.name=xrm", *overrides])

    return make


@pytest.fixture(scope="module")
def xrm_run(tmp_path_factory):
    """One small XRM discovery on colored_digits, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("xrm")
    cfg = config.load(None, [f"output_dir={out}", "steps=60", "eval_every=20", "groups=none",
                             "backbone.options.width=64", "algorithm.name=xrm"])
    return discover(cfg, progress=False)


def test_discovery_writes_every_train_and_val_id_and_a_report(xrm_run):
    ds = DATASETS.get("colored_digits").obj()
    envs = load_environments(xrm_run)
    for split in ("train", "val"):
        ids, env = envs[split]
        assert np.array_equal(ids, ds.splits[split].ids.numpy())
        assert set(np.unique(env)) <= {0, 1}
    report = json.loads((xrm_run / "discovery.json").read_text())
    assert report["flip_rate_curve"]["step"] == [20, 40, 60]
    assert 0 < report["flip_rate"] < 1
    sizes = report["env_sizes"]["train"]
    assert sum(map(sum, sizes.values())) == len(ds.splits["train"])
    assert sizes["class<5"][1] == int(envs["train"][1][ds.splits["train"].y.numpy() == 1].sum())
    assert report["annotation_agreement"]["val"]["accuracy"] is not None
    assert "never used" in report["annotation_agreement"]["note"]
    assert (xrm_run / "flip_rate.png").read_bytes()[:4] == b"\x89PNG"


def test_discover_again_leaves_a_finished_discovery_alone(xrm_run):
    stamp = (xrm_run / "discovery.json").stat().st_mtime_ns
    cfg = config.load(xrm_run / "config.yaml")
    assert discover(cfg, progress=False) == xrm_run
    assert (xrm_run / "discovery.json").stat().st_mtime_ns == stamp


def test_error_set_environments_are_the_identification_models_training_errors(discovery_cfg):
    out = discover(discovery_cfg("algorithm.name=jtt_errors", "eval_splits=[train]"), progress=False)
    ids, env = load_environments(out)["train"]
    final = load_arrays(out / "predictions" / "step_0000060.npz")
    assert np.array_equal(final["train.ids"], ids)
    assert np.array_equal(env, (final["train.probs"].argmax(1) != final["train.y"]).astype(np.int64))
    assert json.loads((out / "discovery.json").read_text())["flip_rate"] is None
    assert not (out / "flip_rate.png").exists()


def test_a_discovery_evaluates_no_split_by_default(xrm_run):
    """XRM is judged by its flip rate, a training log: its run stores no split's predictions."""
    rows = read_jsonl(xrm_run / "results.jsonl")
    assert [r["metrics"] for r in rows] == [{}] * len(rows)
    assert all("flip_rate" in r["train_logs"] for r in rows)
    assert json.loads((xrm_run / "info.json").read_text())["evaluated"] == {}
    assert all(len(load_arrays(p)) == 0 for p in (xrm_run / "predictions").glob("*.npz"))


def test_group_dro_trains_on_inferred_groups_and_reports_source_metrics(xrm_run, tiny_cfg):
    run = train(tiny_cfg("algorithm.name=group_dro", f"groups=inferred:{xrm_run}"))
    info = json.loads((run / "info.json").read_text())
    assert info["source_info"]["discovery_hash"] == xrm_run.name
    assert info["source_group_names"][3] == "class<5, env=1"
    rows = read_jsonl(run / "results.jsonl")
    assert all(r["metrics"]["val"]["source_worst_group_acc"] is not None for r in rows)
    assert "worst_group_acc" in rows[-1]["metrics"]["test"]  # test metrics use the true annotations
    preds = load_arrays(run / "predictions" / "step_0000060.npz")
    for split in ("train", "val"):
        ids, env = load_environments(xrm_run)[split]
        by_id = dict(zip(ids.tolist(), env.tolist()))
        expected = preds[f"{split}.y"] * 2 + np.array([by_id[i] for i in preds[f"{split}.ids"].tolist()])
        assert np.array_equal(preds[f"{split}.group"], expected)
    summary = json.loads((run / "summary.json").read_text())
    assert "val-wga-inferred" in summary
    other = tiny_cfg("algorithm.name=group_dro", "groups=annotated")
    assert config.config_hash(other) != run.name


@pytest.mark.parametrize("algorithm", ["rwg", "subg"])
def test_group_balancing_accepts_inferred_groups(xrm_run, tiny_cfg, algorithm):
    run = train(tiny_cfg(f"algorithm.name={algorithm}", f"groups=inferred:{xrm_run}", "steps=20"))
    assert (run / "done").exists()


def test_a_missing_id_is_a_clear_error_and_leaves_nothing(xrm_run, tiny_cfg, tmp_path):
    cfg = tiny_cfg("algorithm.name=group_dro", f"groups=inferred:{xrm_run}", "dataset.options.seed=1")
    with pytest.raises(HarnessError, match="example id\\(s\\) of this dataset .* are not in discovery .*harness discover"):
        train(cfg)
    assert not (tmp_path / "runs").exists()


def fake_discovery(folder, flip_rate, degenerate=(), algorithm="xrm"):
    """A discovery folder written by hand (environments and report only)."""
    ids = np.arange(6)
    y = np.array([0, 0, 0, 1, 1, 1])
    env = np.array([0, 0, 1, 0, 1, 1])
    save_environments(folder, {s: (ids, y, env) for s in ("train", "val")})
    files.write_json(folder / "discovery.json", {"algorithm": algorithm, "hash": folder.name, "flip_rate": flip_rate,
                                                 "degenerate": list(degenerate), "class_names": ["a", "b"]})
    return folder


def test_degenerate_classes():
    y = np.array([0, 0, 1, 1, 1, 2])
    env = np.array([0, 1, 0, 0, 0, 1])
    assert degenerate_classes(y, env) == [1, 2]
    assert degenerate_classes(y, np.array([0, 1, 1, 0, 0, 1])) == [2]


def test_a_degenerate_discovery_is_refused_as_a_group_source(tmp_path, tiny_cfg):
    bad = fake_discovery(tmp_path / "bad", 0.2, degenerate=[1])
    with pytest.raises(HarnessError, match="degenerate: class\\(es\\) b did not split into two environments"):
        train(tiny_cfg("algorithm.name=group_dro", f"groups=inferred:{bad}"))


def test_best_discovery_takes_the_largest_flip_rate_and_skips_degenerate_ones(tmp_path):
    a = fake_discovery(tmp_path / "a", 0.10)
    b = fake_discovery(tmp_path / "b", 0.30, degenerate=[0])
    c = fake_discovery(tmp_path / "c", 0.20)
    d = fake_discovery(tmp_path / "d", 0.20)
    assert best_discovery([a, b, c, d]) == c
    with pytest.raises(HarnessError, match="all 1 discoveries are degenerate"):
        best_discovery([b])
    jtt = fake_discovery(tmp_path / "jtt", None, algorithm="jtt_errors")
    with pytest.raises(HarnessError, match="has no flip rate"):
        best_discovery([a, jtt])
    assert best_discovery([jtt]) == jtt  # one error set: nothing to choose, so a sweep can use it
    with pytest.raises(HarnessError, match="not a finished discovery run folder"):
        best_discovery([tmp_path / "nothing"])


def test_discover_refuses_what_is_not_a_discovery(discovery_cfg, tmp_path, capsys):
    assert main(["discover", f"output_dir={tmp_path / 'runs'}", "algorithm.name=erm"]) == 2
    assert "algorithm 'erm' does not discover environments; accepted: jtt_errors, xrm" in capsys.readouterr().err
    assert main(["discover", f"output_dir={tmp_path / 'runs'}", "algorithm.name=xrm", "groups=annotated"]) == 2
    assert "groups must be 'none'" in capsys.readouterr().err
    assert main(["train", f"output_dir={tmp_path / 'runs'}", "algorithm.name=group_dro",
                 f"groups=inferred:{tmp_path / 'nowhere'}"]) == 2
    assert "is not a finished discovery run folder" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_discover_print_config_shows_the_run_without_groups_and_trains_nothing(tmp_path, capsys):
    assert main(["discover", "--print-config", f"output_dir={tmp_path / 'runs'}", "algorithm.name=xrm", "steps=15000"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["groups"] == "none" and printed["steps"] == 15000 and printed["algorithm"]["name"] == "xrm"
    assert main(["discover", "--print-config", "algorithm.name=erm"]) == 2
    assert "does not discover environments" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_discover_command_prints_sizes_and_the_run_folder(tmp_path, capsys):
    args = ["discover", f"output_dir={tmp_path / 'runs'}", "algorithm.name=xrm", "steps=20", "eval_every=10", "backbone.options.width=32",
            "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "xrm discovery on colored_digits" in out and "final flip rate" in out
    assert "class<5" in out and "run folder:" in out
