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

from harness.cli import main
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


# --- class 1: every written path built from validated names, inside its folder ---------------

@pytest.mark.parametrize("name", ["..", "a/b", "", ".", "x" * 256, "a\0b", 7, None])
def test_inside_refuses_what_is_not_one_name(name, tmp_path):
    with pytest.raises(HarnessError):
        files.inside(tmp_path, name)


def test_inside_refuses_a_link_that_leads_out(tmp_path):
    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "out").symlink_to(tmp_path)
    assert files.inside(tmp_path / "box", "fine.json") == tmp_path / "box" / "fine.json"
    with pytest.raises(HarnessError, match="leads outside"):
        files.inside(tmp_path / "box", "out")


def _board_with_entry(tmp_path: Path, dataset_key: str) -> Path:
    """A board folder whose one (well-formed) disentanglement entry has a result under ``dataset_key``."""
    import json
    board_dir = tmp_path / "board"
    (board_dir / "entries" / "disentanglement").mkdir(parents=True)
    result = {"hparams_seed": 0, "hparams": {}, "seeds": [0], "candidates": ["0" * 16],
              "runs": [{"hash": "0" * 16, "seed": 0, "step": 1}], "metrics": {}}
    entry = {"board": "disentanglement", "protocol": "disentanglement", "entrant": {"algorithm": "vae"},
             "selection": "last", "results": {dataset_key: result},
             "provenance": {"sweep": str(tmp_path / "sweep"), "config_hashes": ["0" * 16], "seeds": [0],
                            "code_version": {}, "produced_by": "test"}}
    (board_dir / "entries" / "disentanglement" / "vae.json").write_text(json.dumps(entry))
    return board_dir


def test_pictures_never_write_outside_the_board_folder(tmp_path, capsys, monkeypatch):
    import harness.reports.pictures

    def drawn(run_dir: Path, path: Path) -> Path:  # stands for a run's drawing: writes where it is told
        files.write_text(path, "png")
        return Path(path)
    monkeypatch.setattr(harness.reports.pictures, "run_pictures", drawn)
    board_dir = _board_with_entry(tmp_path, "../../../escaped")
    before = set(tmp_path.rglob("*"))
    code = main(["leaderboard", "pictures", "disentanglement", "--board-dir", str(board_dir)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and len(err) < 1000, err
    assert set(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("argv", [
    ["sweep", "SPEC", "--dir", ""], ["sweep", "SPEC", "--dir", "FILE"], ["sweep", "SPEC", "--dir", "FILE/sub"],
    ["sweep", "SPEC", "--dir", "x" * 300], ["sweep", "status", "FILE"], ["sweep", "status", ""],
    ["leaderboard", "render", "worst_group", "--board-dir", ""], ["leaderboard", "render", "worst_group", "--board-dir", "FILE"],
    ["leaderboard", "render", "worst_group", "--board-dir", "y" * 300],
    ["leaderboard", "submit", "worst_group", "FILE", "--board-dir", "B"], ["leaderboard", "submit", "worst_group", "", "--board-dir", "B"],
    ["leaderboard", "verify", "worst_group", "--runs", "FILE"], ["collect", "FILE"], ["collect", ""],
    ["collect", "DIR", "--output", "DIR"], ["collect", "DIR", "--frame", "FILE/x.csv"],
    ["train", "output_dir=", "--print-config"], ["train", "output_dir=FILE", "--print-config"],
    ["train", "output_dir=" + "z" * 300, "--print-config"], ["quickstart", "--dir", "FILE"],
    ["quickstart", "--board-dir", "FILE", "--dir", "DIR"],
])
def test_a_bad_folder_argument_is_one_line_and_writes_nothing(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("a file\n")
    (tmp_path / "DIR").mkdir()
    (tmp_path / "SPEC").write_text(yaml.safe_dump(tiny_spec()))
    before = set(tmp_path.rglob("*"))
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("harness: error: ") and err.count("\n") == 1 and len(err) < 1000, err
    assert set(tmp_path.rglob("*")) == before


# --- class 7: resume repairs what it can ------------------------------------------------------

def test_leftover_takeover_tokens_of_dead_takers_are_removed(tmp_path):
    import hashlib
    import json
    import socket
    gone = {"pid": os.getpid(), "process_start": -9, "host": socket.gethostname(), "heartbeat": time.time()}
    (tmp_path / LOCK).write_text(json.dumps(gone))
    chain = hashlib.sha256((tmp_path / LOCK).read_bytes())
    for n in range(2):  # two takers that died mid-takeover, one after the other
        token = tmp_path / f".{LOCK}.takeover-{chain.hexdigest()[:16]}"
        token.write_text(json.dumps({**gone, "process_start": -10 - n}))
        chain.update(token.read_bytes())
    lock = Lock.acquire(tmp_path)
    assert lock is not None
    lock.release()
    assert not list(tmp_path.glob(".*takeover*"))


# --- class 5: values legal alone, impossible together -----------------------------------------

@pytest.mark.parametrize("argv, section, kind", [
    (["train", "probe.tasks=[digits]", "--print-config"], "probe", "probe"),
    (["discover", "algorithm.name=xrm", "probe.tasks=[digits]", "--print-config"], "probe", "probe"),
    (["train", "visualize.layer=backbone", "--print-config"], "visualize", "visualize")])
def test_a_section_the_run_does_not_read_is_refused(argv, section, kind, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"config section '{section}' is read only by {kind} runs" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_with_a_section_its_kind_does_not_read_is_refused_writing_nothing(tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(overrides={**TINY, "probe.tasks": ["digits"]})))
    assert main(["sweep", str(tmp_path / "spec.yaml"), "--dir", str(tmp_path / "sweep")]) == 2
    assert "read only by probe runs" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()
