"""Sweeps: planning, resume, kills, failures, status and the launchers on this machine."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from conftest import TINY, tiny_spec

from harness.cli import main
from harness.core import config
from harness.core.errors import HarnessError
from harness.core.files import load_arrays, read_jsonl
from harness.runs.run import train
from harness.sweeps import sweep
from harness.sweeps.launchers import Local, make_launcher
from harness.sweeps.trials import LOCK, Lock, Trial, execute, state


def logged(run_dir):
    """The result rows without wall-clock times, which no two runs share."""
    return [{k: v for k, v in row.items() if k != "train_seconds"} for row in read_jsonl(run_dir / "results.jsonl")]


def same_predictions(a, b):
    names = sorted(p.name for p in (a / "predictions").iterdir())
    assert names == sorted(p.name for p in (b / "predictions").iterdir())
    for name in names:
        x, y = load_arrays(a / "predictions" / name), load_arrays(b / "predictions" / name)
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name} {key}")


def write_spec(tmp_path, **changes):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(**changes)))
    return path


@pytest.mark.parametrize("change, message", [
    ({"algoritms": ["erm"]}, "unknown sweep spec key 'algoritms'; accepted: name, datasets, algorithms"),
    ({"algorithms": ["nope"]}, "unknown algorithm 'nope'; accepted: balanced_softmax, cb_loss"),
    ({"groups": ["sometimes"]}, "unknown group source 'sometimes'; accepted: annotated, classes, none, inferred:"),
    ({"groups": ["inferred:xrm"]}, "names no method of discovery.algorithms; accepted: inferred:<path"),
    ({"launcher": "threads:2"}, "unknown launcher 'threads:2'; accepted: local, processes:N"),
    ({"launcher": "processes:0"}, "unknown launcher 'processes:0'"),
    ({"overrides": {"seed": 3}}, "overrides sets 'seed', which the sweep sets itself"),
    ({"overrides": {"stepz": 3}}, "unknown config key 'stepz'"),
    ({"seeds": 0}, "'seeds' must be a positive count or a list"),
    ({"slurm": {"partitoin": "x"}}, "unknown slurm option 'partitoin'; accepted: partition, time_min"),
    ({"slurm": {"time_min": 0}}, "slurm option 'time_min' must be an integer >= 1"),
    ({"discovery": {"algorithms": ["erm"], "seeds": "some"}}, "unknown value of discovery.seeds 'some'; accepted: paired, shared"),
])
def test_bad_spec_exits_2_naming_the_key_and_writes_nothing(tmp_path, capsys, change, message):
    spec = write_spec(tmp_path, **change)
    assert main(["sweep", str(spec), "--dir", str(tmp_path / "sweep")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


def test_trials_are_the_product_of_the_axes_in_folders_named_by_their_hash(tmp_path):
    spec = sweep.parse_spec(tiny_spec(hparam_draws=3, seeds=[0, 5],
                                      algorithms=["erm", {"name": "group_dro", "groups": ["annotated", "classes"]}]))
    trials, waiting = sweep.Plan(spec, tmp_path / "s").downstream()
    assert waiting == []
    keys = {(t.cfg["algorithm"]["name"], t.groups, t.cfg["algorithm"]["hparams_seed"], t.cfg["seed"]) for t in trials}
    assert len(trials) == len(keys) == 3 * 3 * 2
    assert ("group_dro", "classes", 2, 5) in keys
    for t in trials:
        assert t.dir == (tmp_path / "s").resolve() / config.config_hash(t.cfg)
        assert t.cfg["steps"] == TINY["steps"] and t.cfg["backbone"]["options"]["width"] == 64
    draws = {t.cfg["algorithm"]["hparams_seed"]: t.cfg["algorithm"]["hparams"]["lr"] for t in trials
             if t.cfg["algorithm"]["name"] == "erm" and t.cfg["seed"] == 0}
    assert draws[0] == 1e-3 and len(set(draws.values())) == 3  # draw 0 = defaults, others random


def test_the_same_run_named_twice_is_one_trial(tmp_path):
    spec = sweep.parse_spec(tiny_spec(algorithms=["erm", "erm", {"name": "erm"}], hparam_draws=1, seeds=[0]))
    trials, _ = sweep.Plan(spec, tmp_path).downstream()
    assert len(trials) == 1


def test_relaunch_skips_done_trials_and_runs_only_new_ones(small_sweep, tmp_path):
    import shutil
    folder = tmp_path / "copy"
    shutil.copytree(small_sweep, folder)
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("*/results.jsonl")}
    report = sweep.run_sweep(sweep.parse_spec(tiny_spec()), folder, Local())
    assert (report.ran, report.skipped) == (0, 8)
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*/results.jsonl")} == stamps
    report = sweep.run_sweep(sweep.parse_spec(tiny_spec(seeds=3)), folder, Local())
    assert (report.ran, report.skipped) == (4, 8)  # seed 2 of 2 algorithms x 2 draws
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_a_failing_trial_is_recorded_and_the_others_finish_on_worker_processes(tmp_path, capsys):
    # group_dro cannot train without groups: its trial fails at run time, ERM's must not be affected.
    spec = write_spec(tmp_path, groups=["none"], hparam_draws=1, seeds=[0], launcher="processes:2")
    folder = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--dir", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "1 trial(s) ran" in out and "1 failed" in out
    plan = sweep.load_plan(folder)
    states = {t.cfg["algorithm"]["name"]: (t, s) for t, s in sweep.status(plan)[0]}
    assert states["erm"][1] == "done" and states["group_dro"][1] == "failed"
    error = (states["group_dro"][0].dir / "error.txt").read_text()
    assert "Traceback" in error and "'group_dro' trains on groups, but groups is 'none'" in error
    record = json.loads((states["erm"][0].dir / "trial.json").read_text())
    assert record["status"] == "done" and record["pid"] != os.getpid()  # ran in a worker
    assert not (states["erm"][0].dir / LOCK).exists()
    # a worker's results equal those of the same config trained in this process
    cfg = dict(states["erm"][0].cfg, run_dir=str(tmp_path / "here"))
    assert logged(train(cfg)) == logged(states["erm"][0].dir)
    assert main(["sweep", "status", str(folder)]) == 0
    status = capsys.readouterr().out
    assert "all" in status and "failed: group_dro" in status


def test_a_trial_killed_mid_run_resumes_to_exactly_the_uninterrupted_result(tmp_path):
    spec = write_spec(tmp_path, algorithms=["group_dro"], hparam_draws=1, seeds=[0],
                      overrides={"steps": 1500, "eval_every": 100})
    folder = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "sweep", str(spec), "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    [trial] = sweep.Plan(sweep.load_spec(spec), folder).downstream()[0]
    deadline = time.time() + 120
    while len(read_jsonl(trial.dir / "results.jsonl")) < 2:
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (trial.dir / "done").exists()
    assert state(trial) == "interrupted"  # its lock names a dead process
    # what a kill inside an atomic write leaves behind (here planted, as the kill may miss a write)
    (trial.dir / "predictions" / ".step_0000300.npz.x1y2.tmp").write_bytes(b"half")
    assert main(["sweep", str(spec), "--dir", str(folder)]) == 0
    reference = train(dict(trial.cfg, run_dir=str(tmp_path / "reference")))
    rows = logged(trial.dir)
    assert [r["step"] for r in rows] == list(range(100, 1501, 100))
    assert rows == logged(reference)
    same_predictions(trial.dir, reference)
    assert not list(trial.dir.glob("**/.*.tmp")) and not (trial.dir / LOCK).exists()
    assert state(trial) == "done"


def test_status_tells_running_from_interrupted(tmp_path):
    [trial] = [t for t in sweep.Plan(sweep.parse_spec(tiny_spec(algorithms=["erm"], hparam_draws=1, seeds=[0])),
                                     tmp_path).downstream()[0]]
    assert state(trial) == "not started"
    lock = Lock.acquire(trial.dir)
    assert lock is not None and state(trial) == "running"
    assert Lock.acquire(trial.dir) is None  # held by a live process
    assert execute(trial).status == "busy"
    lock.release()
    # a lock left by a process that is gone
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    info = {"pid": int(gone.stdout), "process_start": 1, "host": socket.gethostname(), "heartbeat": time.time()}
    (trial.dir / LOCK).write_text(json.dumps(info))
    assert state(trial) == "interrupted"
    # on another host only the heartbeat tells
    (trial.dir / LOCK).write_text(json.dumps({**info, "host": "elsewhere"}))
    assert state(trial) == "running"
    (trial.dir / LOCK).write_text(json.dumps({**info, "host": "elsewhere", "heartbeat": time.time() - 3600}))
    assert state(trial) == "interrupted"
    taken = Lock.acquire(trial.dir)  # a stale lock is taken over
    assert taken is not None and json.loads((trial.dir / LOCK).read_text())["pid"] == os.getpid()
    taken.release()


def test_launcher_names_are_checked_and_never_guessed(tmp_path):
    assert type(make_launcher("local", tmp_path)).__name__ == "Local"
    assert make_launcher("processes:3", tmp_path).workers == 3
    with pytest.raises(HarnessError, match="unknown launcher 'auto'"):
        make_launcher("auto", tmp_path)


def test_dry_run_lists_trials_and_runs_nothing(tmp_path, capsys):
    spec = write_spec(tmp_path)
    assert main(["sweep", str(spec), "--dir", str(tmp_path / "s"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("not started") >= 8 and not (tmp_path / "s").exists()


def test_sweep_status_of_a_folder_that_is_not_a_sweep_exits_2(tmp_path, capsys):
    assert main(["sweep", "status", str(tmp_path)]) == 2
    assert "is not a sweep folder" in capsys.readouterr().err


def test_trial_label_names_its_axes():
    trial = Trial("train", config.resolve({"algorithm": {"name": "group_dro", "hparams_seed": 2}, "seed": 1}),
                  "annotated")
    assert trial.label == "group_dro on colored_digits, groups annotated, draw 2, seed 1"
