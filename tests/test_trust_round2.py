"""Trust, second round (issue 22): one test per class of hole, each failing before its fix."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

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
