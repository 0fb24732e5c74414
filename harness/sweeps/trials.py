"""One trial of a sweep: what it is, how it runs wherever a launcher puts it, and its state.

A trial is a resolved run config whose ``run_dir`` is ``SWEEP_DIR/<config hash>``, and a kind:
a registration in ``harness.core.registry.TRIAL_KINDS`` (``@trial_kind(name, done_files)`` on the
function that runs a config), such as ``train`` (``harness.runs.run.train``, done: ``done``) or
``discovery`` (``harness.runs.discovery.discover``, done: ``environments.npz`` and
``discovery.json``). Running one:

- skips it when it is done, and steps aside when another live process holds it;
- holds ``running.json`` (host, pid, SLURM job, heartbeat) while it runs, so that
  ``harness sweep status`` can tell running from interrupted, here or on another node;
- resumes from the run's checkpoint when an earlier attempt was killed;
- on an exception, writes the traceback to ``error.txt`` and returns a failed outcome instead of
  raising, so that one failing trial never stops the others;
- writes ``trial.json`` (outcome, host, python, SLURM job, times) when it ends.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.core import config as configs
from harness.core import files
from harness.core.errors import HarnessError
from harness.core.registry import TRIAL_KINDS, TrialKind
from harness.runs.run import CHECKPOINT, read_checkpoint

LOCK, ERROR, RECORD = "running.json", "error.txt", "trial.json"
HEARTBEAT_S = 30.0
# A lock whose heartbeat is older than this is stale even when its holder cannot be checked
# (another host): the holder would have refreshed it four times.
STALE_AFTER_S = 4 * HEARTBEAT_S
STATES = ("done", "running", "failed", "interrupted", "not started")


@dataclass
class Trial:
    """A run of a sweep. ``axes``: the values of the spec's axes as the spec wrote them (groups
    ``inferred:xrm``, where the config names the discovery's folder); ``needs``: the hashes of
    the upstream trials that must be done first (harness.sweeps.planner)."""

    kind: str
    cfg: dict[str, Any]
    axes: dict[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        configs.check_read(self.kind, self.cfg)

    @property
    def kind_entry(self) -> TrialKind:
        return TRIAL_KINDS.get(self.kind).obj

    @property
    def hash(self) -> str:
        return configs.config_hash(self.cfg)

    @property
    def dir(self) -> Path:
        return Path(self.cfg["run_dir"])

    @property
    def label(self) -> str:
        c = self.cfg
        arm = f" [{c['arm']}]" if c.get("arm") else ""
        axes = "".join(f", {key} {value}" for key, value in self.axes.items())
        return (f"{c['algorithm']['name']}{arm} on {c['dataset']['name']}{axes}, "
                f"draw {c['algorithm']['hparams_seed']}, seed {c['seed']}")


@dataclass
class Outcome:
    """What running a trial came to: ``done`` (run here), ``found done`` (finished by another
    process before it started here), ``failed`` (``error`` says why) or ``busy`` (another live
    process holds it)."""

    hash: str
    status: str
    error: str | None = None


def is_done(trial: Trial) -> bool:
    return all((trial.dir / name).exists() for name in trial.kind_entry.done_files)


def state(trial: Trial) -> str:
    """One of STATES. Interrupted: started, not finished, nobody holds it (a relaunch resumes it)."""
    if is_done(trial):
        return "done"
    holder = read_lock(trial.dir)
    if holder is not None and holder_alive(holder):
        return "running"
    if (trial.dir / ERROR).exists():
        return "failed"
    if holder is not None or (trial.dir / "results.jsonl").exists():
        return "interrupted"
    return "not started"


def execute(trial: Trial, log: Callable[[str], None] | None = None, progress: bool | None = False,
            runner: Callable[..., Any] | None = None) -> Outcome:
    """Run (or resume, or skip) one trial; never raises for a failure of the trial itself.
    ``runner(cfg, progress=...)`` runs the config in place of the kind's function (a launcher
    that runs it on several ranks)."""
    if is_done(trial):  # finished by another process since it was planned
        return Outcome(trial.hash, "found done")
    lock = Lock.acquire(trial.dir)
    if lock is None:
        return Outcome(trial.hash, "busy", f"held by {read_lock(trial.dir)}")
    started = time.time()
    try:
        (trial.dir / ERROR).unlink(missing_ok=True)
        for folder in (trial.dir, trial.dir / "predictions"):  # we hold the lock: nobody else writes here
            files.remove_temporaries(folder)
        if log is not None:
            step = resumed_step(trial.dir)
            log(f"trial {trial.hash} ({trial.label}): " + (f"resuming at step {step}" if step else "starting"))
        (runner or trial.kind_entry.run)(trial.cfg, progress=progress)
        _record(trial, "done", started)
        return Outcome(trial.hash, "done")
    except Exception as exc:  # recorded, so that the sweep goes on with the other trials
        files.write_text(trial.dir / ERROR, f"{trial.label}\nconfig hash {trial.hash}\n\n{traceback.format_exc()}")
        _record(trial, "failed", started)
        return Outcome(trial.hash, "failed", f"{type(exc).__name__}: {exc}")
    finally:
        lock.release()


def resumed_step(run_dir: Path) -> int:
    """The step an attempt starts from: that of the run's checkpoint, 0 without a readable one."""
    state = read_checkpoint(run_dir / CHECKPOINT)
    return int(state["step"]) if state is not None else 0


def _record(trial: Trial, status: str, started: float) -> None:
    files.write_json(trial.dir / RECORD, {
        "hash": trial.hash, "kind": trial.kind, "status": status, "host": socket.gethostname(),
        "pid": os.getpid(), "python": sys.executable, "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "started": _stamp(started), "finished": _stamp(time.time()), "seconds": round(time.time() - started, 3),
    })


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


# --- the lock: running.json, created atomically, refreshed by a heartbeat thread -------------

def read_lock(run_dir: Path) -> dict[str, Any] | None:
    try:
        return _parse(_lock_bytes(run_dir / LOCK))
    except FileNotFoundError:
        return None


def _lock_bytes(path: Path) -> bytes:
    """A lock's bytes; one the user may not read is a HarnessError saying so (FileNotFoundError passes)."""
    try:
        return path.read_bytes()
    except PermissionError:
        raise HarnessError(f"cannot read the lock {str(path)!r} (permission denied): another user runs this "
                           "sweep folder; use a folder of your own or ask them for read access") from None


def holder_alive(holder: dict[str, Any]) -> bool:
    """On this host: the holder's process exists (and is the same process, not a reused pid).
    Elsewhere: its heartbeat is fresh. A holder with our own SLURM job id is an earlier attempt
    of this very job (requeued after preemption), hence gone."""
    job = os.environ.get("SLURM_JOB_ID")
    if job and holder.get("slurm_job") == job and holder.get("pid") != os.getpid():
        return False
    if holder.get("host") == socket.gethostname():
        start = _process_start(holder.get("pid"))
        return start is not None and (start == -1 or start == holder.get("process_start"))
    return time.time() - float(holder.get("heartbeat", 0)) < STALE_AFTER_S


def _process_start(pid: int | None) -> int | None:
    """The start time (clock ticks since boot) of process ``pid``, which tells it from a later
    process given the same pid; None if there is no such process; -1 where the system has no
    /proc to tell (then the pid alone is trusted)."""
    if not pid:
        return None
    if Path("/proc/self/stat").exists():
        try:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        except (FileNotFoundError, ProcessLookupError):
            return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return -1


class Lock:
    """``running.json`` held by this process while it runs a trial.

    At most one process holds it, relying only on what NFS (v3 and later), Lustre and GPFS make
    atomic on a shared folder: creating a hard link (fails if the name exists) and rename. A free
    lock is taken by hard-linking a complete file into place. A stale one (its holder is gone) is
    taken over by whoever first creates the *takeover token* named after the stale file's bytes
    (again by hard link); the winner checks that the lock still holds exactly those bytes and
    renames its own file over it. Losers see the token (or the new holder) and step aside. A
    taker killed between the two leaves its token behind; once its process is gone, the next
    token of the chain is named after both, so a dead taker never blocks the trial for good.
    """

    def __init__(self, path: Path, info: dict[str, Any]):
        self.path, self.info = path, info
        self.mine = json.dumps(info)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    @classmethod
    def acquire(cls, run_dir: Path) -> "Lock | None":
        """The lock, or None when a live process holds it (or wins it from under us)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOCK
        info = {"pid": os.getpid(), "process_start": _process_start(os.getpid()), "host": socket.gethostname(),
                "slurm_job": os.environ.get("SLURM_JOB_ID"), "python": sys.executable,
                "started": time.time(), "heartbeat": time.time()}
        tmp = _complete_file(run_dir, info)
        try:
            for _ in range(3):  # the holder may release between our link and our read
                try:
                    os.link(tmp, path)
                    return cls(path, info)
                except FileExistsError:
                    pass
                try:
                    held = _lock_bytes(path)
                except FileNotFoundError:
                    continue
                holder = _parse(held)
                if holder is not None and holder_alive(holder):
                    return None
                return cls(path, info) if _take_over(run_dir, held, tmp) else None
            return None
        finally:
            tmp.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            if not self._still_mine():
                return
            self.info["heartbeat"] = time.time()
            self.mine = json.dumps(self.info)
            files.write_text(self.path, self.mine)

    def _still_mine(self) -> bool:
        try:
            return self.path.read_text() == self.mine
        except FileNotFoundError:
            return False

    def release(self) -> None:
        self.stop.set()
        self.thread.join()
        if self._still_mine():
            self.path.unlink(missing_ok=True)


def _complete_file(run_dir: Path, info: dict[str, Any]) -> Path:
    """A temp file holding ``info`` in full, to be linked or renamed into place."""
    fd, tmp = files.new_file(run_dir, f".{LOCK}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh)
    return tmp


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        holder = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def _take_over(run_dir: Path, stale: bytes, mine: Path) -> bool:
    """Replace the stale lock ``stale`` by ``mine`` if this process wins the takeover token."""
    chain = hashlib.sha256(stale)
    dead: list[Path] = []  # tokens of takers that died mid-takeover, removed once this one wins
    while True:
        token = run_dir / f".{LOCK}.takeover-{chain.hexdigest()[:16]}"
        try:
            os.link(mine, token)
            break
        except FileExistsError:
            try:
                raw = _lock_bytes(token)
            except FileNotFoundError:  # its taker finished: the lock is no longer the stale one
                return False
            taker = _parse(raw)
            if taker is not None and holder_alive(taker):
                return False
            chain.update(raw)  # its taker died mid-takeover: the next token of the chain
            dead.append(token)
    try:
        if (run_dir / LOCK).read_bytes() != stale:
            return False
        os.replace(mine, run_dir / LOCK)
        for leftover in dead:  # safe now: a late walker of the chain finds the lock no longer the stale one
            leftover.unlink(missing_ok=True)
        return True
    except FileNotFoundError:
        return False
    finally:
        token.unlink(missing_ok=True)
