"""Trust, second round (issue 22): one test per class of hole, each failing before its fix."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY, tiny_spec

from harness.core import files
from harness.core.errors import HarnessError
from harness.sweeps import trials
from harness.sweeps.trials import LOCK, Lock


# --- class 6: files and processes ------------------------------------------------------------

def test_the_lock_file_has_the_mode_of_every_other_file_from_the_start(tmp_path):
    files.write_text(tmp_path / "other.txt", "x")
    lock = Lock.acquire(tmp_path)
    try:
        assert stat.S_IMODE((tmp_path / LOCK).stat().st_mode) == stat.S_IMODE((tmp_path / "other.txt").stat().st_mode)
    finally:
        lock.release()


def test_the_process_umask_is_never_changed(tmp_path, monkeypatch):
    def refuse(mask: int) -> int:
        raise AssertionError("os.umask called: it races with the heartbeat thread")
    monkeypatch.setattr(os, "umask", refuse)
    files.write_json(tmp_path / "a.json", {"a": 1})
    lock = Lock.acquire(tmp_path / "run")
    lock.release()


def test_a_lock_the_user_may_not_read_is_a_clear_message(tmp_path, monkeypatch):
    (tmp_path / LOCK).write_text("{}")
    real = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self.name == LOCK:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)
    monkeypatch.setattr(Path, "read_bytes", denied)
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: denied(self).decode())
    with pytest.raises(HarnessError, match="cannot read the lock .*permission denied"):
        trials.read_lock(tmp_path)
    with pytest.raises(HarnessError, match="cannot read the lock"):
        Lock.acquire(tmp_path)


def test_a_trial_finished_elsewhere_before_it_starts_is_not_counted_as_run_here(tmp_path):
    from harness.sweeps.launch import summary
    from harness.sweeps.planner import Report
    from harness.sweeps.trials import Trial, execute

    trial = Trial("train", {"run_dir": str(tmp_path), "algorithm": {"name": "erm", "hparams_seed": 0},
                            "dataset": {"name": "colored_digits"}, "seed": 0})
    (tmp_path / "done").write_text("done\n")
    report = Report()
    report.add([execute(trial)])
    assert (report.ran, report.elsewhere) == (0, 1)
    assert summary(report).startswith("0 trial(s) ran")


def test_sigterm_of_a_sweep_says_how_to_resume_and_leaks_no_semaphore(tmp_path):
    spec = tiny_spec(algorithms=["erm"], hparam_draws=1, overrides={**TINY, "steps": 100000, "eval_every": 100000},
                     launcher="processes:2")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "sweep", str(tmp_path / "spec.yaml"), "--dir",
                             str(sweep_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for _ in range(1200):  # until both workers hold their trial's lock
            if len(list(sweep_dir.glob(f"*/{LOCK}"))) == 2 or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.rstrip().splitlines()[-1] == "harness: interrupted: rerun the same command to resume", err
    assert "leaked" not in err and "Traceback" not in err, err
