"""The slurm launcher against a real SLURM cluster (.ci/slurm/start.sh starts one on this machine).

Skipped, with the reason, where no cluster answers `sinfo`; with CI=true (what .ci/run sets)
a missing cluster is a failure instead, so CI cannot pass without running these.
"""
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import tiny_spec

from harness.core import config
from harness.core.files import load_torch, read_jsonl
from harness.runs import distributed
from harness.runs.run import train
from harness.sweeps import sweep
from harness.sweeps.launchers import make_launcher
from harness.sweeps.trials import Trial, read_lock, state

SLURM = {"name": "slurm", "partition": "debug", "time_min": 5, "cpus_per_task": 1, "mem_gb": 1}


def cluster_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "sinfo is not on the PATH"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip()}"
    if not set(proc.stdout.split()) & {"idle", "mix", "alloc"}:
        return f"no node is up (sinfo states: {proc.stdout.split()})"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    problem = cluster_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but no SLURM cluster answers ({problem}); .ci/run starts one with .ci/slurm/start.sh")
    pytest.skip(f"no SLURM cluster answers ({problem}); start one with .ci/slurm/start.sh")


def logged(run_dir):
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in read_jsonl(run_dir / "results.jsonl")]


def job_logs(folder, stream: str = "out"):
    return "\n".join(p.read_text() for p in sorted((folder / ".submitit").glob(f"**/*_log.{stream}")))


def test_a_sweep_submitted_to_slurm_runs_every_trial_in_this_python(tmp_path):
    spec = sweep.parse_spec(tiny_spec(hparam_draws=1, launcher=SLURM))
    assert spec.launcher.options["partition"] == "debug" and spec.launcher.options["mem_gb"] == 1.0
    folder = tmp_path / "sweep"
    report = sweep.run_sweep(spec, folder, make_launcher(spec.launcher, folder, "test"))
    assert report.ok and report.ran == 4, report.failed
    trials, _ = sweep.Plan(spec, folder).downstream()
    jobs = set()
    for trial in trials:
        assert state(trial) == "done"
        record = json.loads((trial.dir / "trial.json").read_text())
        assert record["python"] == sys.executable and record["slurm_job"]
        jobs.add(record["slurm_job"])
        # the cluster's result is the one this process computes for the same config
        assert logged(trial.dir) == logged(train(dict(trial.cfg, run_dir=str(tmp_path / "local" / trial.hash))))
    assert len(jobs) == 4  # one array task each
    assert job_logs(folder).count(": starting") == 4


def submit_one_trial(folder, algorithm: str, steps: int):
    """Start a one-trial sweep on SLURM in a thread; return once the trial has a checkpoint."""
    spec = sweep.parse_spec(tiny_spec(algorithms=[algorithm], hparam_draws=1, seeds=[0], launcher=SLURM,
                                      overrides={"steps": steps, "eval_every": 100}))
    [trial] = sweep.Plan(spec, folder).downstream()[0]
    reports = []
    thread = threading.Thread(target=lambda: reports.append(
        sweep.run_sweep(spec, folder, make_launcher(spec.launcher, folder, "test"))))
    thread.start()
    deadline = time.time() + 240
    while not (trial.dir / "checkpoint.pt").exists():
        assert thread.is_alive() and time.time() < deadline, "the job did not start or ended early"
        time.sleep(0.1)
    return trial, thread, reports


def preempt(job: str, folder) -> None:
    """What SLURM does to a preempted job: SIGTERM (submitit ignores it), then the USR2 signal,
    only once the TERM has landed: a late TERM would also hit the `scontrol requeue` that
    submitit's USR2 handler starts (every process of the job gets the signal)."""
    subprocess.run(["scancel", "--signal=TERM", job], check=True)
    deadline = time.time() + 60
    while "Bypassing signal SIGTERM" not in job_logs(folder, "err"):
        assert time.time() < deadline, "the job never received the SIGTERM"
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)


def test_a_preempted_job_is_requeued_and_its_trial_resumes_from_the_checkpoint(tmp_path):
    folder = tmp_path / "sweep"
    trial, thread, reports = submit_one_trial(folder, "group_dro", steps=1500)
    preempt(read_lock(trial.dir)["slurm_job"], folder)
    thread.join(timeout=300)
    assert not thread.is_alive() and reports and reports[0].ok, reports
    logs = job_logs(folder)
    assert ": starting" in logs and ": resuming at step " in logs  # two attempts, the second resumed
    reference = train(dict(trial.cfg, run_dir=str(tmp_path / "reference")))
    assert [r["step"] for r in logged(trial.dir)] == list(range(100, 1501, 100))
    assert logged(trial.dir) == logged(reference)


def test_a_job_cancelled_without_a_result_fails_its_trial_instead_of_hanging(tmp_path, monkeypatch):
    from harness.sweeps import launchers
    monkeypatch.setattr(launchers, "SLURM_VANISHED_S", 3.0)
    # long enough that it cannot finish in SLURM's KillWait (10 s): submitit ignores the SIGTERM of
    # scancel, so the job dies only at the SIGKILL that follows
    trial, thread, reports = submit_one_trial(tmp_path / "sweep", "erm", steps=30000)
    subprocess.run(["scancel", read_lock(trial.dir)["slurm_job"]], check=True)
    thread.join(timeout=120)
    assert not thread.is_alive() and reports
    assert trial.hash in reports[0].failed, reports[0]
    assert "left the queue without a result" in reports[0].failed[trial.hash]
    assert state(trial) == "failed"
    assert "left the queue without a result" in (trial.dir / "error.txt").read_text()


# --- a data-parallel trial: one job of 2 tasks ----------------------------------------------------------

def simclr_cfg(tmp_path, name, steps, eval_every, views="none"):
    return config.load(None, [f"output_dir={tmp_path / 'runs'}", f"run_dir={tmp_path / name}", "algorithm.name=simclr",
                              f"steps={steps}", f"eval_every={eval_every}", "backbone.options.width=16", "device=cpu",
                              "algorithm.hparams.batch_size=32", "algorithm.hparams.projector_depth=1",
                              f"algorithm.hparams.views={views}", "algorithm.hparams.lr=0.01"])


def test_a_two_task_job_trains_what_one_process_trains_on_the_global_batch(tmp_path):
    cfg = simclr_cfg(tmp_path, "two", 6, 3)
    launcher = make_launcher({**SLURM, "ranks": 2}, tmp_path, "test")
    [outcome] = launcher.run([Trial("train", cfg)])
    assert outcome.status == "done", outcome.error
    two, one = tmp_path / "two", train(simclr_cfg(tmp_path, "one", 6, 3))
    record = json.loads((two / "trial.json").read_text())
    assert record["slurm_job"] and record["python"] == sys.executable
    assert len(load_torch(two / "checkpoint.pt")["rng_ranks"]) == 2  # it ran on two ranks
    assert sorted(p.name for p in (tmp_path / ".submitit").glob("*/*_result.pkl")) == \
        [f"{record['slurm_job']}_{task}_result.pkl" for task in (0, 1)]  # as two tasks of one job
    assert job_logs(tmp_path).count(": starting") == 1  # rank 0 alone ran the trial's bookkeeping
    a, b = logged(two), logged(one)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [3, 6]
    for x, y in zip(a, b):
        assert x["train_logs"]["loss"] == pytest.approx(y["train_logs"]["loss"], rel=1e-4)
    got = load_torch(two / "checkpoint.pt")["algorithm"]["model"]
    want = load_torch(one / "checkpoint.pt")["algorithm"]["model"]
    for key, value in want.items():
        if value.is_floating_point():
            assert torch.allclose(got[key], value, atol=1e-4), key


def _train_on_two_ranks(cfg):
    train(cfg, progress=False)


def test_a_preempted_two_task_job_is_requeued_and_resumes_on_both_ranks(tmp_path):
    cfg = simclr_cfg(tmp_path, "two", 400, 50, views="gaussian_noise")
    trial = Trial("train", cfg)
    launcher = make_launcher({**SLURM, "ranks": 2}, tmp_path, "test")
    outcomes = []
    thread = threading.Thread(target=lambda: outcomes.extend(launcher.run([trial])))
    thread.start()
    deadline = time.time() + 240
    while not (trial.dir / "checkpoint.pt").exists():
        assert thread.is_alive() and time.time() < deadline, "the job did not start or ended early"
        time.sleep(0.1)
    preempt(read_lock(trial.dir)["slurm_job"], tmp_path)
    thread.join(timeout=300)
    assert not thread.is_alive() and outcomes and outcomes[0].status == "done", outcomes
    logs = job_logs(tmp_path)
    assert logs.count(": starting") == 1 and ": resuming at step " in logs  # two attempts, the second resumed
    assert len(load_torch(trial.dir / "checkpoint.pt")["rng_ranks"]) == 2
    reference = simclr_cfg(tmp_path, "reference", 400, 50, views="gaussian_noise")
    distributed.spawn(_train_on_two_ranks, 2, reference)
    assert [r["step"] for r in logged(trial.dir)] == list(range(50, 401, 50))
    assert logged(trial.dir) == logged(tmp_path / "reference")
