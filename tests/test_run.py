import json

import numpy as np
import pytest
import torch

from harness.core import config
from harness.core.errors import HarnessError
from harness.core.files import load_arrays, read_jsonl
from harness.core.registry import ALGORITHMS
from harness.runs.run import train


def metrics_of(run):
    return [(r["step"], r["train_logs"], r["metrics"]) for r in read_jsonl(run / "results.jsonl")]


def test_a_run_writes_its_folder(tiny_cfg):
    cfg = tiny_cfg("algorithm.name=group_dro")
    run = train(cfg)
    assert run.name == config.config_hash(cfg)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.yaml", "done", "info.json", "manifest.json",
                                                      "predictions", "results.jsonl", "summary.json"]
    rows = read_jsonl(run / "results.jsonl")
    assert [r["step"] for r in rows] == [20, 40, 60]
    assert set(rows[0]["metrics"]) == {"train", "val", "test"}
    preds = load_arrays(run / "predictions" / "step_0000060.npz")
    assert preds["test.probs"].shape == (len(preds["test.ids"]), 2)
    assert torch.allclose(torch.from_numpy(preds["test.probs"]).sum(1), torch.ones(len(preds["test.ids"])))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val-wga"]["step"] in (20, 40, 60)
    best = max(rows, key=lambda r: (r["metrics"]["val"]["worst_group_acc"], -r["step"]))
    assert summary["val-wga"]["worst_group_acc"] == best["metrics"]["test"]["worst_group_acc"]


def test_same_seed_same_numbers_and_another_seed_differs(tiny_cfg, tmp_path):
    a = train(tiny_cfg("run_dir=" + str(tmp_path / "a")))
    b = train(tiny_cfg("run_dir=" + str(tmp_path / "b")))
    c = train(tiny_cfg("run_dir=" + str(tmp_path / "c"), "seed=1"))
    assert metrics_of(a) == metrics_of(b)
    assert metrics_of(a) != metrics_of(c)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("algorithm, extra", [
    ("erm", []), ("group_dro", []), ("rwg", []),
    ("xrm", ["groups=none"]),  # per-example twin assignment and flipped labels
    ("jtt", ["algorithm.hparams.id_steps=45"]),  # resumed in stage 1: its optimizer state must survive
    ("crt", ["algorithm.hparams.erm_steps=25"]),  # resumed in the head stage: its optimizer state must survive
    ("lff", []),  # per-example loss averages
    ("irm", ["algorithm.hparams.anneal_steps=45"]),  # the optimizer restarts after the resume
])
def test_resume_after_an_interruption_equals_an_uninterrupted_run(tiny_cfg, tmp_path, monkeypatch, algorithm, extra):
    whole = train(tiny_cfg(f"algorithm.name={algorithm}", *extra, "run_dir=" + str(tmp_path / "whole")))
    cls = ALGORITHMS.get(algorithm).obj
    original = cls.update

    def dies_at_step_50(self, batch, step):
        if step == 50:
            raise Interrupted
        return original(self, batch, step)

    cfg = tiny_cfg(f"algorithm.name={algorithm}", *extra, "run_dir=" + str(tmp_path / "cut"))
    with monkeypatch.context() as m:
        m.setattr(cls, "update", dies_at_step_50)
        with pytest.raises(Interrupted):
            train(cfg)
    cut = tmp_path / "cut"
    assert not (cut / "done").exists()
    assert [r["step"] for r in read_jsonl(cut / "results.jsonl")] == [20, 40]
    train(cfg)
    assert metrics_of(cut) == metrics_of(whole)


def test_a_finished_run_is_not_rerun(tiny_cfg):
    cfg = tiny_cfg()
    run = train(cfg)
    stamp = (run / "results.jsonl").stat().st_mtime_ns
    train(cfg)
    assert (run / "results.jsonl").stat().st_mtime_ns == stamp


def test_an_algorithm_that_needs_groups_refuses_group_source_none(tiny_cfg, tmp_path):
    with pytest.raises(HarnessError, match="'group_dro' trains on groups, but groups is 'none'"):
        train(tiny_cfg("algorithm.name=group_dro", "groups=none"))
    assert not (tmp_path / "runs").exists()


def test_class_groups_give_source_metrics_on_validation(tiny_cfg):
    run = train(tiny_cfg("algorithm.name=group_dro", "groups=classes"))
    val = read_jsonl(run / "results.jsonl")[-1]["metrics"]["val"]
    assert val["source_worst_group_acc"] == pytest.approx(val["worst_class_acc"])


def test_threads_auto_counts_free_cores_under_the_process_ceiling(monkeypatch):
    from harness.runs import hardware as runs

    monkeypatch.setattr(runs, "_THREAD_CEILING", [4])  # the process had 4 threads before its first run
    monkeypatch.setattr(runs.os, "sched_getaffinity", lambda pid: set(range(8)))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # what this process's previous run used: its own share of the load
    try:
        for load, expected in ((0.2, 4), (5.4, 4), (6.6, 2), (7.6, 1), (30.0, 1)):
            monkeypatch.setattr(runs.os, "getloadavg", lambda: (load, 0.0, 0.0))
            assert runs.pick_threads("auto") == expected, load
        assert runs.pick_threads(6) == 6  # a number is taken as given, above the ceiling too
    finally:
        torch.set_num_threads(previous)


def test_threads_are_recorded_not_hashed_and_checked(tiny_cfg, capsys):
    previous = torch.get_num_threads()
    try:
        run = train(tiny_cfg("threads=2", "steps=20"))
        assert json.loads((run / "info.json").read_text())["threads"] == 2
        assert run.name == config.config_hash(tiny_cfg("steps=20"))  # where and how fast is not what
    finally:
        torch.set_num_threads(previous)
    for bad in ("threads=0", "threads=many", "threads=true"):
        with pytest.raises(HarnessError, match="threads must be auto or an integer >= 1, got "):
            tiny_cfg(bad)


def test_a_run_evaluates_a_seeded_train_subset_and_the_splits_it_names(tiny_cfg, tmp_path):
    from harness.runs.run import build_dataset

    cfg = tiny_cfg("algorithm.name=group_dro", "groups=classes", "eval_train_size=100")
    run = train(cfg)
    dataset = build_dataset(cfg)
    full = dataset.splits["train"]
    info = json.loads((run / "info.json").read_text())
    assert info["evaluated"] == {"train": 100, "val": len(dataset.splits["val"]), "test": len(dataset.splits["test"])}
    arrays = load_arrays(run / "predictions" / "step_0000060.npz")
    ids = arrays["train.ids"]
    assert len(ids) == len(set(ids)) == 100 and set(ids) <= set(full.ids.tolist())
    positions = [full.ids.tolist().index(i) for i in ids]
    assert arrays["train.y"].tolist() == full.y[positions].tolist()
    assert arrays["train.attr"].tolist() == dataset.annotated_groups("train")[positions].tolist()
    assert arrays["train.group"].tolist() == full.y[positions].tolist()  # groups=classes: the class
    # the logged metrics are those of the stored arrays; the subset is the same at every evaluation
    protocol = ALGORITHMS.get("group_dro").obj.protocol
    from harness.protocols.base import protocol as get_protocol
    assert read_jsonl(run / "results.jsonl")[-1]["metrics"] == get_protocol(protocol).scores(arrays, info)
    assert np.array_equal(load_arrays(run / "predictions" / "step_0000020.npz")["train.ids"], ids)
    # a run that names its splits evaluates those only, and is another run (another hash)
    only_val = train(tiny_cfg("eval_splits=[val]"))
    assert sorted(load_arrays(only_val / "predictions" / "step_0000060.npz")) == [
        "val.attr", "val.group", "val.ids", "val.probs", "val.y"]
    assert only_val.name != config.config_hash(tiny_cfg())


def test_eval_settings_are_checked_before_anything_is_written(tiny_cfg, tmp_path):
    with pytest.raises(HarnessError, match="unknown split of protocol worst_group \\(eval_splits\\) 'vall'; "
                                           "accepted: train, val, test"):
        train(tiny_cfg("eval_splits=[vall]"))
    assert not (tmp_path / "runs").exists()
    for bad, message in (("eval_splits=val", "eval_splits must be auto or a list of split names"),
                         ("eval_train_size=-1", "eval_train_size must be auto or an integer >= 0, got -1")):
        with pytest.raises(HarnessError, match=message):
            tiny_cfg(bad)
