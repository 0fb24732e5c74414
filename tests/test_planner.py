"""Trials that depend on trials: a probe's pretraining run planned once by its hash, resumed
when killed, reused when done, and blocking its probes (named) when it fails; the shipped sweep
specs plan the runs their board entries record."""
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from harness.leaderboards import board as boards

from harness.cli import main
from harness.core import config as configs
from harness.core.files import read_jsonl
from harness.core.registry import ALGORITHMS, TRIAL_KINDS, Entry, TrialKind
from harness.protocols import worst_group
from harness.runs.run import train
from harness.sweeps import sweep
from harness.sweeps.launchers import Local
from harness.sweeps.planner import placed
from harness.sweeps.trials import LOCK, state

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def probe_spec(**changes) -> dict:
    """Two probe trials (two C grids) of one briefly trained CNN."""
    spec = {"name": "probes", "datasets": ["colored_digits"], "kind": "probe", "seeds": 1,
            "algorithms": [{"name": "erm", "overrides": {"probe.cs": [0.1]}},
                           {"name": "erm", "overrides": {"probe.cs": [1.0]}}],
            "overrides": {"steps": 40, "eval_every": 10, "backbone.name": "cnn", "backbone.options.channels": [4, 8],
                          "probe.tasks": ["digits_colour"], "probe.knn_k": 5}}
    spec.update(changes)
    return spec


@pytest.fixture
def counted_training(monkeypatch):
    """The train kind, counting its calls (in this process: the local launcher)."""
    TRIAL_KINDS.names()  # the built-in kinds first, so that this one replaces train's
    calls = []
    entry = TRIAL_KINDS.get("train")

    def counting(cfg, progress=None):
        calls.append(cfg["run_dir"])
        return train(cfg, progress)

    kind = TrialKind(counting, entry.obj.done_files, entry.obj.needs, entry.obj.sets)
    monkeypatch.setitem(TRIAL_KINDS._entries, "train", Entry("train", kind, entry.description))
    return calls


def pretraining_of(plan):
    trials, waiting = plan.trials()
    assert waiting == []
    [pre] = [t for t in trials if t.kind == "train"]
    probes = [t for t in trials if t.kind == "probe"]
    assert len(probes) == 2 and all(p.needs == (pre.hash,) for p in probes)
    return pre, probes


def test_two_probes_of_one_network_train_it_once_and_a_relaunch_reuses_it(tmp_path, counted_training, capsys):
    spec = sweep.parse_spec(probe_spec())
    folder = tmp_path / "s"
    pre, probes = pretraining_of(sweep.Plan(spec, folder))
    assert pre.dir == folder.resolve() / configs.config_hash(pre.cfg)  # planned by its own hash, in the sweep
    report = sweep.run_sweep(spec, folder, Local())
    assert report.ok and report.ran == 3, report
    assert counted_training == [str(pre.dir)]  # one pretraining for the two probe trials
    assert len(read_jsonl(pre.dir / "results.jsonl")) == 4  # trained once: 40 steps, a row every 10
    for p in probes:
        assert state(p) == "done" and json.loads((p.dir / "info.json").read_text())["source"] == pre.hash
    again = sweep.run_sweep(spec, folder, Local())
    assert again.ok and again.ran == 0 and again.skipped == 3
    assert counted_training == [str(pre.dir)]  # reused, not trained again
    # the dry run shows the chain
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(probe_spec()))
    assert main(["sweep", str(path), "--dir", str(folder), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count(f"{pre.hash} (train, done)") == 2


def test_a_killed_pretraining_resumes_under_the_planner_and_then_its_probes_run(tmp_path, monkeypatch):
    spec = sweep.parse_spec(probe_spec())
    folder = tmp_path / "s"
    pre, probes = pretraining_of(sweep.Plan(spec, folder))
    erm = ALGORITHMS.get("erm").obj
    original = erm.update

    class Killed(Exception):
        pass

    def dies_at_step_25(self, batch, step):
        if step == 25:
            raise Killed
        return original(self, batch, step)

    with monkeypatch.context() as m:  # the pretraining run dies mid-run, as if killed
        m.setattr(erm, "update", dies_at_step_25)
        with pytest.raises(Killed):
            train(pre.cfg)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (pre.dir / LOCK).write_text(json.dumps({"pid": int(gone.stdout), "process_start": 1, "host": socket.gethostname(),
                                            "heartbeat": time.time()}))  # the lock its dead process left
    assert state(pre) == "interrupted" and (pre.dir / "checkpoint.pt").exists()
    assert [r["step"] for r in read_jsonl(pre.dir / "results.jsonl")] == [10, 20]
    report = sweep.run_sweep(spec, folder, Local())
    assert report.ok and report.resumed == 1 and report.ran == 3, report
    assert [r["step"] for r in read_jsonl(pre.dir / "results.jsonl")] == [10, 20, 30, 40]
    reference = train(dict(pre.cfg, run_dir=str(tmp_path / "reference")))
    strip = [{k: v for k, v in r.items() if k != "train_seconds"} for r in read_jsonl(reference / "results.jsonl")]
    assert [{k: v for k, v in r.items() if k != "train_seconds"} for r in read_jsonl(pre.dir / "results.jsonl")] == strip
    assert all(state(p) == "done" for p in probes) and not (pre.dir / LOCK).exists()


def test_a_failing_pretraining_blocks_its_probes_naming_it(tmp_path, monkeypatch, capsys):
    TRIAL_KINDS.names()

    def fails(cfg, progress=None):
        raise RuntimeError("no network today")

    monkeypatch.setitem(TRIAL_KINDS._entries, "train", Entry("train", TrialKind(fails, ("done",)), "failing"))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(probe_spec()))
    folder = tmp_path / "s"
    assert main(["sweep", str(path), "--dir", str(folder)]) == 1
    pre, probes = pretraining_of(sweep.load_plan(folder))
    out = capsys.readouterr().out
    assert "1 failed" in out and out.count(f"blocked by {pre.hash} (train, failed)") == 2
    assert all(state(p) == "not started" for p in probes)  # never started: nothing to probe
    assert main(["sweep", "status", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.count(f"blocked by {pre.hash} (train, failed)") == 2
    for p in probes:
        assert f"{p.hash} ({p.label}): blocked by {pre.hash}" in out


def test_a_probe_trial_alone_refuses_an_untrained_network_naming_the_run_and_the_command(tmp_path):
    from harness.core.errors import HarnessError
    from harness.runs.probe import probe

    spec = sweep.parse_spec(probe_spec())
    pre, [first, _] = pretraining_of(sweep.Plan(spec, tmp_path))
    with pytest.raises(HarnessError, match=f"pretraining run .*{pre.hash}.* is not done; `harness probe`"):
        probe(first.cfg)
    assert not first.dir.exists()


def test_a_spec_axis_is_any_config_key_and_groups_is_only_written_where_the_spec_names_it(tmp_path):
    spec = sweep.parse_spec({"name": "ax", "datasets": ["colored_digits"], "seeds": 1,
                             "algorithms": ["erm", {"name": "group_dro", "axes": {"groups": ["classes"]}}],
                             "axes": {"groups": ["annotated", "none"], "backbone.options.width": [16, 32]}})
    trials, _ = sweep.Plan(spec, tmp_path).downstream()
    seen = {(t.cfg["algorithm"]["name"], t.cfg["groups"], t.cfg["backbone"]["options"]["width"]) for t in trials}
    assert seen == {("erm", g, w) for g in ("annotated", "none") for w in (16, 32)} | \
        {("group_dro", "classes", w) for w in (16, 32)}
    assert spec.axes == ["groups", "backbone.options.width"]
    plain = sweep.parse_spec({"name": "p", "datasets": ["colored_digits"], "algorithms": ["erm"]})
    assert plain.axes == [] and all(a.point == {} for a in plain.arms)


def _planned_hashes(spec_path: Path, tmp_path: Path) -> set[str]:
    """Every hash the spec plans: its trials, and for each trial on inferred groups the hash it
    gets with each of the discoveries it may choose (which one is best needs the runs)."""
    plan = sweep.Plan(sweep.load_spec(spec_path), tmp_path / spec_path.stem)
    trials, waiting = plan.trials()
    found = {t.hash for t in trials}
    for w in waiting:
        for chosen in w.upstream:
            with pytest.MonkeyPatch.context() as m:
                m.setattr(worst_group, "best_discovery", lambda dirs, chosen=chosen: chosen.dir)
                found.add(placed(w.trial.kind, w.need.complete(w.trial.cfg, [u.dir for u in w.upstream])).hash)
    return found


def test_the_shipped_specs_plan_the_runs_of_the_shipped_board_entries(tmp_path):
    entries = sorted((boards.BOARD_DIR / "entries").glob("*/*.json"))
    assert entries
    by_spec: dict[Path, set[str]] = {}
    for path in entries:
        provenance = json.loads(path.read_text())["provenance"]
        spec = EXPERIMENTS / f"{Path(provenance['sweep']).name}.yaml"
        if path.parent.name == "worst_group_smoke":  # made by `harness quickstart` (defaults), whose spec is code
            from harness import quickstart
            spec = tmp_path / "quickstart.yaml"
            spec.write_text(yaml.safe_dump(quickstart.spec(600, 3, "processes:2")))
        by_spec.setdefault(spec, set()).update(provenance["config_hashes"])
    for board in boards.BOARD_DIR.glob("*.yaml"):  # a board's own sweeps are among those its entries name
        for listed in yaml.safe_load(board.read_text()).get("sweeps", []):
            assert (board.parent / listed).resolve().exists(), (board, listed)
    for spec, recorded in by_spec.items():
        missing = recorded - _planned_hashes(spec, tmp_path)
        assert not missing, f"{spec.name} no longer plans {len(missing)} recorded run(s): {sorted(missing)[:3]}"
