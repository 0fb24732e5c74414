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
from harness.core.files import TornLineWarning, load_arrays, read_jsonl
from harness.core.options import Option
from harness.core.registry import LAUNCHERS
from harness.runs.run import train
from harness.sweeps import planner, sweep
from harness.sweeps.launchers import Launcher, LauncherChoice, Local, make_launcher, override_launcher
from harness.sweeps.trials import LOCK, Lock, Outcome, Trial, execute, state


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
    ({"algorithms": ["nope"]}, "unknown algorithm 'nope'; accepted: balanced_softmax, beta_tcvae"),
    ({"groups": ["sometimes"]}, "unknown group source 'sometimes'; accepted: annotated, classes, none, inferred:"),
    ({"groups": ["inferred:xrm"]}, "names no method of discovery.algorithms; accepted: inferred:<path"),
    ({"launcher": "threads:2"}, "unknown launcher 'threads'; accepted: local, processes, slurm"),
    ({"launcher": {"name": "threads"}}, "unknown launcher 'threads'; accepted: local, processes, slurm"),
    ({"launcher": "processes:0"}, "processes launcher option 'workers' must be an integer >= 1, got 0"),
    ({"launcher": "processes:two"}, "processes launcher option 'workers' must be an integer >= 1, got 'two'"),
    ({"launcher": "slurm:debug"}, "launcher slurm has no shorthand slurm:<value>"),
    ({"launcher": ["local"]}, "sweep spec key 'launcher' must be a launcher name (local, processes, slurm)"),
    ({"launcher": {"name": "local", "workers": 2}}, "unknown local launcher option 'workers'; accepted: (none"),
    ({"overrides": {"seed": 3}}, "overrides sets 'seed', which the sweep sets itself"),
    ({"overrides": {"stepz": 3}}, "unknown config key 'stepz'"),
    ({"seeds": 0}, "sweep spec key 'seeds' must be an integer >= 1 or a non-empty list of integers >= 0, got 0"),
    ({"seeds": [0, -1]}, "sweep spec key 'seeds' must be an integer >= 1 or a non-empty list of integers >= 0"),
    ({"hparam_draws": 0}, "sweep spec key 'hparam_draws' must be an integer >= 1, got 0"),
    ({"groups": []}, "sweep spec key 'groups' must be a non-empty list, got []"),
    ({"groups": [3]}, "each item of sweep spec key 'groups' must be a name, got 3"),
    ({"kind": "probes"}, "sweep spec key 'kind' must be one of "),
    ({"launcher": {"name": "slurm", "partitoin": "x"}},
     "unknown slurm launcher option 'partitoin'; accepted: partition, time_min, cpus_per_task"),
    ({"launcher": {"name": "slurm", "time_min": 0}}, "slurm launcher option 'time_min' must be an integer >= 1, got 0"),
    ({"launcher": {"name": "slurm", "mem_gb": 0}}, "slurm launcher option 'mem_gb' must be a finite number > 0 or null"),
    ({"launcher": {"name": "slurm", "partition": 3}},
     "slurm launcher option 'partition' must be a non-empty string or null, got 3"),
    ({"slurm": {"partition": "debug"}}, "sweep spec key 'slurm' has moved: SLURM options are options of the slurm "
                                        "launcher, e.g. launcher: {name: slurm, partition: debug"),
    ({"algorithms": [{"name": "erm", "overrides": {"arm": "mine"}}]}, "sets 'arm', which the sweep sets itself"),
    ({"discovery": {"algorithms": ["erm"], "seeds": "some"}}, "sweep spec key 'discovery.seeds' must be one of paired, shared, got 'some'"),
    ({"axes": ["groups"]}, "sweep spec: axes must be a mapping of config keys to lists of values"),
    ({"axes": {"seed": [1, 2]}}, "sweep spec: axes sets 'seed', which the sweep sets itself"),
    ({"axes": {"groups": ["none"]}}, "sweep spec: groups is given twice, as a key and in axes; keep one"),
    ({"axes": {"stepz": [1, 2]}}, "unknown config key 'stepz'"),
    ({"axes": {"steps": []}}, "sweep spec key 'steps' must be a non-empty list"),
    ({"overrides": {"groups": "none"}}, "the overrides of erm set 'groups', an axis of the sweep; set it in one place"),
    ({"algorithms": [{"name": "erm", "axez": {}}]}, "an algorithm is a name or {name: ..., axes: {...}, groups"),
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
    keys = {(t.cfg["algorithm"]["name"], t.axes["groups"], t.cfg["algorithm"]["hparams_seed"], t.cfg["seed"])
            for t in trials}
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
    states = {t.cfg["algorithm"]["name"]: (t, s) for t, s in sweep.status(plan).trials}
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
    with open(trial.dir / "results.jsonl", "a") as fh:  # and a kill inside an append to the results
        fh.write('{"metrics": {"test": {"avg_')
    with pytest.warns(TornLineWarning):
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
    assert make_launcher({"name": "processes", "workers": 4}, tmp_path).workers == 4
    assert make_launcher({"name": "processes"}, tmp_path).workers == 2  # the declared default
    with pytest.raises(HarnessError, match="unknown launcher 'auto'"):
        make_launcher("auto", tmp_path)


def test_slurm_options_are_the_launchers_own_with_defaults_filled_in(tmp_path):
    spec = sweep.parse_spec(tiny_spec(launcher={"name": "slurm", "partition": "debug", "mem_gb": 4}))
    assert spec.launcher.name == "slurm"
    assert spec.launcher.options == {"partition": "debug", "time_min": 60, "cpus_per_task": 1, "gpus_per_node": 0,
                                     "mem_gb": 4.0, "array_parallelism": 64, "signal_delay_s": 90,
                                     "max_requeues": 3, "ranks": 1}
    slurm = make_launcher(spec.launcher, tmp_path, "demo")
    assert slurm.options == spec.launcher.options and slurm.folder == tmp_path / ".submitit"
    # --launcher: the same launcher keeps the spec's options under the given ones; another replaces them
    shorter = override_launcher(spec.launcher, {"name": "slurm", "time_min": 5})
    assert (shorter.options["partition"], shorter.options["time_min"]) == ("debug", 5)
    assert override_launcher(spec.launcher, "slurm") == spec.launcher
    assert override_launcher(spec.launcher, "processes:4") == LauncherChoice("processes", {"workers": 4, "ranks": 1})


def test_a_new_launcher_is_one_registration_with_its_options(tmp_path, monkeypatch, capsys):
    ran = []

    class Recorder(Launcher):
        """Records the trials it is given."""

        shorthand = "tag"

        def __init__(self, tag: str, **where):
            super().__init__(**where)
            self.tag = tag

        def run(self, trials, desc="trials"):
            ran.extend((self.tag, self.job_name, t.hash) for t in trials)
            return [Outcome(t.hash, "done") for t in trials]

    LAUNCHERS.names()  # the built-in launchers, then a copy of the registry that the test may change
    monkeypatch.setattr(LAUNCHERS, "_entries", dict(LAUNCHERS._entries))
    LAUNCHERS.register("recorder", options={"tag": Option("x", str, "a label", choices=("x", "y"))})(Recorder)
    spec = sweep.parse_spec(tiny_spec(launcher="recorder:y", hparam_draws=1, seeds=[0]))
    report = sweep.run_sweep(spec, tmp_path / "s", make_launcher(spec.launcher, tmp_path / "s", "tiny"))
    assert report.ran == 2 and {(tag, job) for tag, job, _ in ran} == {("y", "tiny")}
    with pytest.raises(HarnessError, match="recorder launcher option 'tag' must be one of x, y, got 'z'"):
        sweep.parse_spec(tiny_spec(launcher={"name": "recorder", "tag": "z"}))
    assert main(["list", "launchers"]) == 0
    assert "tag='x': one of x, y; a label" in capsys.readouterr().out


def test_each_trial_names_its_arm_by_its_own_overrides(tmp_path):
    spec = sweep.parse_spec(tiny_spec(
        algorithms=["erm", {"name": "group_dro", "overrides": {"algorithm": {"hparams": {"eta": 0.05}}, "steps": 30}},
                    {"name": "group_dro", "overrides": {"algorithm.hparams.eta": 0.5}}],
        hparam_draws=1, seeds=[0]))
    trials, _ = sweep.Plan(spec, tmp_path).downstream()
    arms = {t.cfg["arm"]: t.cfg for t in trials}
    assert sorted(arms) == ["", "algorithm.hparams.eta=0.05 steps=30", "algorithm.hparams.eta=0.5"]
    assert arms[""]["algorithm"]["name"] == "erm"  # sweep-wide overrides are no part of an arm
    assert arms["algorithm.hparams.eta=0.5"]["algorithm"]["hparams"]["eta"] == 0.5
    # the arm is a name, not a setting: it does not enter the config hash
    cfg = arms["algorithm.hparams.eta=0.5"]
    assert config.config_hash(dict(cfg, arm="")) == config.config_hash(cfg)
    assert Trial("train", cfg, {"groups": "annotated"}).label.startswith("group_dro [algorithm.hparams.eta=0.5] on ")


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
                  {"groups": "annotated"})
    assert trial.label == "group_dro on colored_digits, groups annotated, draw 2, seed 1"


def test_two_sweeps_sharing_a_folder_both_end_ok_when_together_they_finish(tmp_path, monkeypatch, capsys):
    """A trial another live process trains is waited for and counted as finished elsewhere,
    instead of making this sweep fail (exit 1) while the two together finish everything."""
    import threading

    from harness.sweeps.trials import Lock

    spec = sweep.parse_spec(tiny_spec(algorithms=["erm"], hparam_draws=1, seeds=2))
    plan = sweep.Plan(spec, tmp_path / "s")
    trials, _ = plan.downstream()
    other = trials[0]
    lock = Lock.acquire(other.dir)  # "another sweep" holds this trial (a live holder: this process)
    assert lock is not None

    def the_other_sweep():
        time.sleep(0.5)
        train(other.cfg)
        lock.release()

    monkeypatch.setattr(planner, "BUSY_POLL_S", 0.05)
    helper = threading.Thread(target=the_other_sweep)
    helper.start()
    report = sweep.run_sweep(spec, tmp_path / "s", Local())
    helper.join()
    assert report.ok and (report.ran, report.elsewhere, report.failed) == (1, 1, {})
    assert "being trained by another process" in capsys.readouterr().out


def test_a_slurm_launch_without_a_cluster_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """SLURM's commands on the PATH but no controller answering: one clear line, no job pickles."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in ("srun", "sbatch", "squeue", "sinfo"):
        (bin_dir / command).write_text("#!/bin/sh\necho 'slurm_load_partitions: Unable to contact slurm controller' >&2\n"
                                       "exit 1\n")
        (bin_dir / command).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(algorithms=["erm"], hparam_draws=1, seeds=1, launcher="slurm")))
    assert main(["sweep", str(spec), "--dir", str(tmp_path / "s")]) == 2
    assert "no SLURM cluster answers (sinfo exited 1: 'slurm_load_partitions: Unable to contact slurm controller'); " \
           "nothing was submitted" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
