"""Launchers: where a list of trials runs. Chosen by name, never detected.

- ``local``: in this process, one after another.
- ``processes:N``: N long-lived worker processes (spawned, so nothing forked from a process
  holding threads); each imports torch and the harness once and runs many trials, with
  ``cores // N`` torch threads so that N workers do not fight over the cores.
- ``slurm``: one SLURM array task per trial through submitit's ``SlurmExecutor`` (named
  explicitly: submitit's auto-detection would pick SLURM whenever ``srun`` is on the PATH).
  Jobs run this very interpreter (``sys.executable``), so they import this installation of the
  harness. The trial callable is ``Checkpointable``: on preemption or timeout submitit requeues
  the job and the trial resumes from its run checkpoint.

Every launcher returns one :class:`~harness.sweeps.trials.Outcome` per trial; a trial that fails is
recorded in its folder (``error.txt``) and the others go on.
"""
from __future__ import annotations

import multiprocessing
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import submitit
from tqdm.auto import tqdm

from harness.core import files
from harness.core.errors import HarnessError, unknown
from harness.sweeps.trials import ERROR, Outcome, Trial, execute, is_done

ACCEPTED = ("local", "processes:N (N worker processes, e.g. processes:2)", "slurm")
SLURM_DEFAULTS: dict[str, Any] = {
    "partition": None,          # None: the cluster's default partition
    "time_min": 60,             # per job; a job that runs out is requeued (up to max_requeues times)
    "cpus_per_task": 1,
    "gpus_per_node": 0,
    "mem_gb": None,             # None: the cluster's default (DefMemPerCPU)
    "array_parallelism": 64,    # array tasks running at once
    "signal_delay_s": 90,       # USR2 this long before the time limit: checkpoint and requeue
    "max_requeues": 3,          # after timeouts (preemptions always requeue)
}
# A job that leaves the queue without writing its result is failed after this long.
SLURM_VANISHED_S = 30.0


def check_launcher(name: Any) -> str:
    if name == "local" or name == "slurm":
        return name
    if isinstance(name, str) and name.startswith("processes:"):
        count = name.split(":", 1)[1]
        if count.isdigit() and int(count) >= 1:
            return name
    raise unknown("launcher", name, ACCEPTED)


def slurm_options(options: dict[str, Any]) -> dict[str, Any]:
    """The spec's ``slurm`` mapping over SLURM_DEFAULTS, each value checked."""
    if not isinstance(options, dict):
        raise HarnessError(f"sweep spec key 'slurm' must be a mapping with keys {', '.join(SLURM_DEFAULTS)}")
    for key, value in options.items():
        if key not in SLURM_DEFAULTS:
            raise unknown("slurm option", key, list(SLURM_DEFAULTS))
        if value is None and SLURM_DEFAULTS[key] is None:
            continue
        if key == "partition":
            ok, what = isinstance(value, str) and bool(value), "a partition name"
        elif key == "mem_gb":
            ok, what = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0, "a positive number"
        else:
            low = 0 if key in ("gpus_per_node", "max_requeues") else 1
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
            what = f"an integer >= {low}"
        if not ok:
            raise HarnessError(f"slurm option {key!r} must be {what}, got {value!r}")
    return {**SLURM_DEFAULTS, **options}


def make_launcher(name: str, sweep_dir: Path, slurm: dict[str, Any] | None = None, job_name: str = "sweep") -> Any:
    name = check_launcher(name)
    if name == "local":
        return Local()
    if name == "slurm":
        return Slurm(slurm_options(slurm or {}), Path(sweep_dir) / ".submitit", job_name)
    return Processes(int(name.split(":", 1)[1]))


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _bar(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="trial", dynamic_ncols=True)


def _count(bar: tqdm, outcomes: list[Outcome]) -> None:
    failed = sum(o.status == "failed" for o in outcomes)
    bar.set_postfix(failed=failed, refresh=False)
    bar.update(1)


class Local:
    """In this process, one trial after another."""

    def run(self, trials: list[Trial], desc: str = "trials") -> list[Outcome]:
        outcomes: list[Outcome] = []
        with _bar(len(trials), desc) as bar:
            for trial in trials:
                outcomes.append(execute(trial, progress=None))
                _count(bar, outcomes)
        return outcomes


def _init_worker(threads: int) -> None:
    """Once per worker: pay the imports and set the thread count; trials then start at once."""
    import torch

    from harness.core.registry import load_plugins
    from harness.runs import run  # noqa: F401  (imported for its side effect: the import cost, paid once)

    torch.set_num_threads(threads)
    load_plugins()


class Processes:
    """N worker processes, each running many trials."""

    def __init__(self, workers: int):
        self.workers = workers

    def run(self, trials: list[Trial], desc: str = "trials") -> list[Outcome]:
        workers = min(self.workers, len(trials))
        threads = max(1, available_cores() // workers)
        outcomes: list[Outcome] = []
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(threads,))
        with pool, _bar(len(trials), f"{desc} ({workers} workers)") as bar:
            futures = {pool.submit(execute, trial): trial for trial in trials}
            for future in as_completed(futures):
                try:
                    outcomes.append(future.result())
                except BrokenProcessPool as exc:  # a worker was killed: its trial resumes on relaunch
                    outcomes.append(Outcome(futures[future].hash, "failed", f"worker process died ({exc})"))
                _count(bar, outcomes)
        return outcomes


class TrialJob(submitit.helpers.Checkpointable):
    """A trial in a SLURM job. The inherited ``checkpoint`` resubmits the same trial when the
    job is preempted or times out; nothing else is needed, since the trial resumes from its
    run checkpoint."""

    def __call__(self, trial: Trial) -> Outcome:
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:
            import torch
            torch.set_num_threads(int(cpus))
        return execute(trial, log=lambda line: print(line, flush=True))


class Slurm:
    """One array task per trial, through submitit; waits for all of them."""

    def __init__(self, options: dict[str, Any], folder: Path, job_name: str, poll_s: float = 2.0):
        self.options, self.folder, self.job_name, self.poll_s = options, folder, job_name, poll_s

    def executor(self) -> submitit.SlurmExecutor:
        o = self.options
        try:
            executor = submitit.SlurmExecutor(folder=self.folder / "%j", python=shlex.quote(sys.executable),
                                              max_num_timeout=o["max_requeues"])
        except RuntimeError as exc:  # no srun on the PATH
            raise HarnessError(f"launcher slurm needs SLURM's commands (srun, sbatch, squeue) on the PATH: {exc}; "
                               f"accepted launchers: {', '.join(ACCEPTED)}") from None
        params = {"job_name": f"harness-{self.job_name}", "time": o["time_min"], "cpus_per_task": o["cpus_per_task"],
                  "array_parallelism": o["array_parallelism"], "signal_delay_s": o["signal_delay_s"]}
        if o["partition"]:
            params["partition"] = o["partition"]
        if o["gpus_per_node"]:
            params["gpus_per_node"] = o["gpus_per_node"]
        if o["mem_gb"]:
            params["mem"] = f"{int(o['mem_gb'] * 1024)}MB"
        executor.update_parameters(**params)
        return executor

    def run(self, trials: list[Trial], desc: str = "trials") -> list[Outcome]:
        try:
            jobs = self.executor().map_array(TrialJob(), trials)
        except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError, OSError) as exc:
            raise HarnessError(f"launcher slurm could not submit (is the cluster up? try `sinfo`): {exc}") from None
        pending = dict(zip(jobs, trials))
        outcomes: list[Outcome] = []
        vanished: dict[str, float] = {}
        with _bar(len(trials), f"{desc} (SLURM job {jobs[0].job_id.split('_')[0]})") as bar:
            while pending:
                queued = _queued_job_ids()
                for job, trial in list(pending.items()):
                    # The result file, not job.done(): that polls sacct, which fails (noisily) on
                    # clusters without accounting; the queue is watched here instead.
                    if job.paths.result_pickle.exists():
                        outcome = _job_outcome(job, trial)
                    elif queued is not None and job.job_id not in queued:
                        first = vanished.setdefault(job.job_id, time.time())
                        if time.time() - first < SLURM_VANISHED_S:
                            continue
                        outcome = _failed(trial, f"SLURM job {job.job_id} left the queue without a result "
                                                 f"(cancelled, out of memory or node failure); log: {job.paths.stderr}")
                    else:
                        continue
                    del pending[job]
                    outcomes.append(outcome)
                    _count(bar, outcomes)
                if pending:
                    time.sleep(self.poll_s)
        return outcomes


def _queued_job_ids() -> set[str] | None:
    """Ids of every job and array task SLURM still holds (pending, running, requeued); None
    when squeue does not answer (then nothing is declared vanished)."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(out.stdout.split()) if out.returncode == 0 else None


def _job_outcome(job: Any, trial: Trial) -> Outcome:
    try:
        return job.result()
    except Exception as exc:  # the job itself failed (not the trial, which records its own errors)
        return _failed(trial, f"SLURM job {job.job_id} failed: {exc}")


def _failed(trial: Trial, message: str) -> Outcome:
    if not is_done(trial) and not (trial.dir / ERROR).exists():
        files.write_text(trial.dir / ERROR, f"{trial.label}\nconfig hash {trial.hash}\n\n{message}\n")
    return Outcome(trial.hash, "failed", message)
