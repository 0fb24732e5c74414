"""The trial lock: at most one process holds it, stale takeover included."""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import socket
import time
from pathlib import Path

from harness.sweeps.trials import LOCK, Lock, _process_start, read_lock

ROUNDS = 300
RACERS = 3


def _stale(folder: Path) -> None:
    """A lock whose holder is gone: our own pid, but another process start (a reused pid)."""
    info = {"pid": os.getppid(), "process_start": -7, "host": socket.gethostname(), "heartbeat": time.time()}
    (folder / LOCK).write_text(json.dumps(info))


def _racer(folder: str, rounds: int, barrier, wins) -> None:
    for round_ in range(rounds):
        barrier.wait()  # the parent has planted a stale lock in this round's folder
        lock = Lock.acquire(Path(folder) / str(round_))
        wins.put((round_, lock is not None))
        barrier.wait()  # everybody has tried: only now may the winner let go
        if lock is not None:
            lock.release()


def test_one_process_at_most_wins_a_stale_lock(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, wins = ctx.Barrier(RACERS + 1), ctx.Queue()
    for round_ in range(ROUNDS):
        (tmp_path / str(round_)).mkdir()
        _stale(tmp_path / str(round_))
    racers = [ctx.Process(target=_racer, args=(str(tmp_path), ROUNDS, barrier, wins)) for _ in range(RACERS)]
    for p in racers:
        p.start()
    for _ in range(ROUNDS):
        barrier.wait()
        barrier.wait()
    results = [wins.get(timeout=60) for _ in range(ROUNDS * RACERS)]
    for p in racers:
        p.join(timeout=60)
        assert p.exitcode == 0
    winners = [sum(won for r, won in results if r == round_) for round_ in range(ROUNDS)]
    assert winners == [1] * ROUNDS
    assert all(not (tmp_path / str(r) / LOCK).exists() for r in range(ROUNDS))


def test_a_live_holder_keeps_its_lock_and_a_released_one_is_free(tmp_path):
    lock = Lock.acquire(tmp_path)
    assert lock is not None and read_lock(tmp_path)["pid"] == os.getpid()
    assert Lock.acquire(tmp_path) is None
    lock.release()
    again = Lock.acquire(tmp_path)
    assert again is not None
    again.release()
    assert not (tmp_path / LOCK).exists()


def _token(folder: Path) -> Path:
    """The takeover token of the stale lock now in ``folder``."""
    return folder / f".{LOCK}.takeover-{hashlib.sha256((folder / LOCK).read_bytes()).hexdigest()[:16]}"


def test_a_taker_killed_mid_takeover_does_not_block_the_trial(tmp_path):
    _stale(tmp_path)
    _token(tmp_path).write_text(json.dumps({"pid": os.getpid(), "process_start": -9, "host": socket.gethostname()}))
    lock = Lock.acquire(tmp_path)
    assert lock is not None and read_lock(tmp_path)["pid"] == os.getpid()
    lock.release()


def test_a_live_taker_makes_others_step_aside(tmp_path):
    _stale(tmp_path)
    stale = (tmp_path / LOCK).read_bytes()
    taker = {"pid": os.getpid(), "process_start": _process_start(os.getpid()), "host": socket.gethostname()}
    _token(tmp_path).write_text(json.dumps(taker))
    assert Lock.acquire(tmp_path) is None
    assert (tmp_path / LOCK).read_bytes() == stale
