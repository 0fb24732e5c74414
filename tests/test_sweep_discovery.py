"""Discovery trials run before the trials that train on their groups.

Instead of ``harness.runs.discovery`` (XRM, JTT: slow), a stand-in with its interface is registered
as the ``discovery`` trial kind for these tests only (``discover(cfg) -> run folder`` holding
environments.npz and discovery.json, ``best_discovery(run_dirs) -> the largest final flip
rate``), with an inferred group source for the training loop that reads its environments.
"""
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_spec
from harness.algorithms.erm import ERM

from harness.core import config, files
from harness.core.errors import HarnessError
from harness.core.registry import ALGORITHMS, TRIAL_KINDS, Entry, TrialKind
from harness.data.groups import GroupAssignment
from harness.protocols import worst_group
from harness.protocols.selection import choose
from harness.reports import collect
from harness.runs import run as run_module
from harness.sweeps import sweep
from harness.sweeps.launchers import Local
from harness.sweeps.trials import state


@pytest.fixture
def standin(monkeypatch):
    """The stand-in discovery method ``standin``; returns the log of calls in order."""
    TRIAL_KINDS.names()  # the built-in kinds are registered first, so that the stand-in replaces discovery's
    calls = []

    def discover(cfg, progress=None):
        out = Path(cfg["run_dir"])
        files.write_text(out / "config.yaml", config.dump(cfg))  # a run folder, as discovery's are
        dataset = run_module.build_dataset(cfg)
        # the minority (colour disagrees with label) as environment 1; flip rate grows with the draw
        arrays = {}
        for split in ("train", "val"):
            s = dataset.splits[split]
            arrays[f"{split}.ids"] = s.ids.numpy()
            arrays[f"{split}.env"] = (s.y != s.attr).long().numpy()
        files.save_arrays(out / "environments.npz", **arrays)
        files.write_json(out / "discovery.json", {"final_flip_rate": 0.1 * (1 + cfg["algorithm"]["hparams_seed"])})
        calls.append(("discover", cfg["algorithm"]["hparams_seed"], cfg["seed"]))
        return out

    def best_discovery(run_dirs):
        return max(run_dirs, key=lambda d: json.loads((Path(d) / "discovery.json").read_text())["final_flip_rate"])

    kind = TrialKind(discover, ("environments.npz", "discovery.json"), sets=(("groups", "none"),))
    monkeypatch.setitem(TRIAL_KINDS._entries, "discovery", Entry("discovery", kind, "stand-in discovery"))
    monkeypatch.setattr(worst_group, "best_discovery", best_discovery)
    monkeypatch.setitem(ALGORITHMS._entries, "standin", Entry("standin", ERM, "stand-in discovery", ERM.hparams))

    original = worst_group.resolve_groups

    def resolve_groups(source, dataset):
        if not source.startswith("inferred:"):
            return original(source, dataset)
        folder = Path(source[len("inferred:"):])
        envs = files.load_arrays(folder / "environments.npz")
        by_split = {}
        for split in ("train", "val"):
            s = dataset.splits[split]
            env = dict(zip(envs[f"{split}.ids"].tolist(), envs[f"{split}.env"].tolist()))
            by_split[split] = s.y * 2 + torch.tensor([env[i] for i in s.ids.tolist()])
        calls.append(("train", folder.name))
        return GroupAssignment("inferred", 4, ["y0 e0", "y0 e1", "y1 e0", "y1 e1"], by_split)

    monkeypatch.setattr(worst_group, "resolve_groups", resolve_groups)
    return calls


def discovery_spec(**changes):
    spec = {"algorithms": ["erm", {"name": "group_dro", "groups": ["inferred:standin"]}], "hparam_draws": 1,
            "discovery": {"algorithms": ["standin"], "hparam_draws": 2, "overrides": {"steps": 10}}}
    return tiny_spec(**{**spec, **changes})


def test_discovery_trials_run_first_and_downstream_trials_use_the_best_one(standin, tmp_path):
    spec = sweep.parse_spec(discovery_spec())
    plan = sweep.Plan(spec, tmp_path / "s")
    trials, waiting = plan.downstream()
    assert len(plan.discovery) == 2 * 2  # 2 draws x 2 paired seeds
    assert len(waiting) == 2 and all("waiting for 2 standin discovery run(s) (not started)" in w for w in waiting)
    assert [t.axes["groups"] for t in trials] == ["annotated", "annotated"]  # ERM, planned at once
    report = sweep.run_sweep(spec, tmp_path / "s", Local())
    assert report.ok and report.ran == 4 + 4
    kinds = [c[0] for c in standin]
    assert kinds == ["discover"] * 4 + ["train"] * 2  # every discovery before any training on its groups
    best = {t.cfg["seed"]: t.dir.name for t in plan.discovery if t.cfg["algorithm"]["hparams_seed"] == 1}
    trials, waiting = plan.downstream()
    assert waiting == []
    inferred = [t for t in trials if t.axes["groups"] == "inferred:standin"]
    assert {t.cfg["seed"]: Path(t.cfg["groups"][len("inferred:"):]).name for t in inferred} == best
    assert all(state(t) == "done" for t in trials + plan.discovery)
    # relaunch: nothing runs again
    standin.clear()
    report = sweep.run_sweep(spec, tmp_path / "s", Local())
    assert (report.ran, report.skipped, standin) == (0, 8, [])
    # collected with the discovery method's name as group source, selectable on inferred groups
    frame = collect.load_runs(collect.run_folders(tmp_path / "s")[0])
    assert set(frame["groups"]) == {"annotated", "inferred:standin"}
    chosen = choose(frame, worst_group.WorstGroup("worst_group").rule("val-wga-inferred"),
                    ["algorithm", "dataset", "groups", "arm"])
    assert set(chosen["groups"]) == {"inferred:standin"} and len(chosen) == 2
    assert chosen["val.source_worst_group_acc"].between(0, 1).all()


def test_shared_discovery_seed_serves_every_downstream_seed(standin, tmp_path):
    spec = sweep.parse_spec(discovery_spec(discovery={"algorithms": ["standin"], "hparam_draws": 1, "seeds": "shared",
                                                      "overrides": {"steps": 10}}))
    report = sweep.run_sweep(spec, tmp_path / "s", Local())
    assert report.ok and [c for c in standin if c[0] == "discover"] == [("discover", 0, 0)]
    trials, _ = sweep.Plan(spec, tmp_path / "s").downstream()
    assert len({t.cfg["groups"] for t in trials if t.axes["groups"] == "inferred:standin"}) == 1


def test_a_discovery_method_may_have_its_own_overrides(standin, tmp_path):
    spec = sweep.parse_spec(discovery_spec(discovery={
        "algorithms": [{"name": "standin", "overrides": {"steps": 30}, "hparam_draws": 3}], "hparam_draws": 1,
        "overrides": {"steps": 10, "eval_every": 5}}))
    plan = sweep.Plan(spec, tmp_path / "s")
    assert {(t.cfg["steps"], t.cfg["eval_every"]) for t in plan.discovery} == {(30, 5)}  # its own over the block's
    assert sorted({t.cfg["algorithm"]["hparams_seed"] for t in plan.discovery}) == [0, 1, 2]
    with pytest.raises(HarnessError, match="a discovery method is a name or"):
        sweep.parse_spec(discovery_spec(discovery={"algorithms": [{"name": "standin", "steps": 30}]}))


def test_a_failed_discovery_blocks_the_trials_on_its_groups_naming_it(standin, tmp_path, monkeypatch, capsys):
    kind = TRIAL_KINDS.get("discovery").obj

    def fails_for_seed_1(cfg, progress=None):
        if cfg["seed"] == 1:
            raise RuntimeError("no environments today")
        return kind.run(cfg, progress)

    monkeypatch.setitem(TRIAL_KINDS._entries, "discovery",
                        Entry("discovery", TrialKind(fails_for_seed_1, kind.done_files, sets=kind.sets), "failing"))
    spec = sweep.parse_spec(discovery_spec())
    report = sweep.run_sweep(spec, tmp_path / "s", Local())
    failed = [t for t in sweep.Plan(spec, tmp_path / "s").discovery if t.cfg["seed"] == 1]
    assert not report.ok and set(report.failed) == {t.hash for t in failed}
    # seed 0's group_dro trained on its discovery; seed 1's is blocked, naming a failed discovery
    [line] = report.blocked
    assert line.startswith("group_dro (inferred:standin) on colored_digits, seed 1: blocked by ")
    assert any(f"blocked by {t.hash} (discovery, failed)" in line for t in failed)
    status = sweep.status(sweep.load_plan(tmp_path / "s"))
    assert [s for _, s in status.waiting] == ["blocked"]
    assert status.blocked_lines() == [line]
