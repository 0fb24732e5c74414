"""Launchers: where a list of trials runs. Chosen by name, never detected.

A launcher is a registration in ``harness.core.registry.LAUNCHERS``: a :class:`Launcher` class
and the options it accepts (declared :class:`~harness.core.options.Option` constraints; ``harness
list launchers`` shows them). A spec names one as ``launcher: local`` or ``launcher: {name:
slurm, partition: debug, time_min: 60}``; a launcher with a ``shorthand`` option also takes
``name:value`` (``processes:4`` is ``{name: processes, workers: 4}``).

- ``local``: in this process, one after another.
- ``processes``: N long-lived worker processes (spawned, so nothing forked from a process
  holding threads); each imports torch and the harness once and runs many trials, with
  ``cores // N`` torch threads so that N workers do not fight over the cores.
- ``slurm``: one SLURM array task per trial through submitit's ``SlurmExecutor`` (named
  explicitly: submitit's auto-detection would pick SLURM whenever ``srun`` is on the PATH).
  Jobs run this very interpreter (``sys.executable``), so they import this installation of the
  harness. The trial callable is ``Checkpointable``: on preemption or timeout submitit requeues
  the job and the trial resumes from its run checkpoint.

Data-parallel trials: ``ranks: W`` (``processes`` and ``slurm``) runs each trial on W ranks of
one process group (``harness.runs.distributed``; the config, its hash and ``batch_size``, the
global batch, are those of a 1-process run). ``processes``: the worker holds the trial's lock and
records its outcome while W spawned processes (one torch thread each) train it. ``slurm``: one
job of W tasks on one node (``ntasks_per_node``); submitit's ``TorchDistributedEnvironment``
gives each task its rank; task 0 holds the lock, records the outcome and tells the others
whether to run; every rank resumes from the checkpoint, and a preempted or timed-out job is
requeued whole (task 0 checkpoints the submission, as for one task).

Every launcher returns one :class:`~harness.sweeps.trials.Outcome` per trial; a trial that fails is
recorded in its folder (``error.txt``) and the others go on.
"""
from __future__ import annotations

import functools
import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
import torch.distributed as dist
from tqdm.auto import tqdm

from harness.core import config as configs
from harness.core import files
from harness.core.errors import HarnessError, shown
from harness.core.options import Option, check_options
from harness.core.registry import LAUNCHERS
from harness.runs import distributed
from harness.runs.hardware import pick_device
from harness.sweeps.trials import ERROR, Outcome, Trial, execute, is_done

RANKS_HELP = ("data-parallel ranks per trial (torch.distributed: gloo on CPU, nccl on GPU; batch_size stays "
              "the global batch, split over the ranks)")

SLURM_OPTIONS: dict[str, Option] = {
    "partition": Option(None, str, "SLURM partition (null: the cluster's default)", nullable=True),
    "time_min": Option(60, int, "minutes per job; a job that runs out is requeued (max_requeues times)", low=1),
    "cpus_per_task": Option(1, int, "CPUs per job (also its torch threads)", low=1),
    "gpus_per_node": Option(0, int, "GPUs per job", low=0),
    "mem_gb": Option(None, float, "memory per job in GB (null: the cluster's default, DefMemPerCPU)", low=0,
                     low_open=True, nullable=True),
    "array_parallelism": Option(64, int, "array tasks running at once", low=1),
    "signal_delay_s": Option(90, int, "USR2 this long before the time limit: checkpoint and requeue", low=1),
    "max_requeues": Option(3, int, "requeues after timeouts (preemptions always requeue)", low=0),
    "ranks": Option(1, int, RANKS_HELP + "; one job of this many tasks on one node, cpus_per_task each "
                    "(on GPUs set gpus_per_node to it too)", low=1),
}
# A job that leaves the queue without writing its result is failed after this long.
SLURM_VANISHED_S = 30.0


@dataclass(frozen=True)
class LauncherChoice:
    """A launcher's name and its checked options (every declared one, defaults filled in)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        given = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.name} ({given})" if given else self.name


def parse_launcher(value: Any, where: str = "launcher") -> LauncherChoice:
    """``local``, ``processes:4`` or ``{name: slurm, partition: debug, ...}``, checked."""
    name, given = _split(value, where)
    return _checked(name, given)


def override_launcher(current: LauncherChoice, value: Any, where: str = "--launcher") -> LauncherChoice:
    """A launcher given over the spec's (``--launcher``): another launcher replaces it with its
    own options; the same launcher keeps the spec's options under the ones given."""
    name, given = _split(value, where)
    return _checked(name, {**current.options, **given} if name == current.name else given)


def _split(value: Any, where: str) -> tuple[str, dict[str, Any]]:
    """The launcher's name and the options given with it (not yet checked)."""
    if isinstance(value, str) and value:
        name, sep, short = value.partition(":")
        if not sep:
            return name, {}
        option = getattr(LAUNCHERS.get(name).obj, "shorthand", None)
        if option is None:
            raise HarnessError(f"{where}: launcher {name} has no shorthand {name}:<value> (got {value!r}); "
                               f"write {{name: {name}, <option>: <value>}} (`harness list launchers`)")
        return name, {option: configs.parse_value(short)}
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return value["name"], {k: v for k, v in value.items() if k != "name"}
    raise HarnessError(f"{where} must be a launcher name ({', '.join(LAUNCHERS.names())}), a shorthand like "
                       f"processes:4, or a mapping like {{name: slurm, partition: debug}}; got {value!r}")


def _checked(name: str, given: dict[str, Any]) -> LauncherChoice:
    entry = LAUNCHERS.get(name)
    return LauncherChoice(name, check_options(f"{name} launcher option", given, entry.options))


def make_launcher(choice: LauncherChoice | str | dict, sweep_dir: Path, job_name: str = "sweep") -> "Launcher":
    """The launcher for a sweep in ``sweep_dir`` (SLURM keeps its job files there)."""
    if not isinstance(choice, LauncherChoice):
        choice = parse_launcher(choice)
    return LAUNCHERS.get(choice.name).obj(**choice.options, sweep_dir=Path(sweep_dir), job_name=job_name)


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


class Launcher:
    """Runs trials. Built with its checked options as keywords, plus the sweep's folder and
    name; ``shorthand`` names the option that ``<name>:<value>`` sets, if any."""

    shorthand: str | None = None

    def __init__(self, *, sweep_dir: Path | None = None, job_name: str = "sweep"):
        self.sweep_dir, self.job_name = sweep_dir, job_name

    def ready(self) -> None:
        """Raise a HarnessError when trials cannot run where this launcher would put them
        (called before a sweep writes anything); nothing to check by default."""

    def run(self, trials: list[Trial], desc: str = "trials") -> list[Outcome]:
        """One outcome per trial; a trial that fails is recorded, never raised."""
        raise NotImplementedError


@LAUNCHERS.register("local")
class Local(Launcher):
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops the workers


@LAUNCHERS.register("processes", options={
    "workers": Option(2, int, "worker processes", low=1),
    "ranks": Option(1, int, RANKS_HELP + "; each worker spawns this many processes per trial", low=1)})
class Processes(Launcher):
    """N long-lived worker processes on this machine, each running many trials (shorthand processes:N)."""

    shorthand = "workers"

    def __init__(self, workers: int, ranks: int = 1, **where: Any):
        super().__init__(**where)
        self.workers, self.ranks = workers, ranks

    def run(self, trials: list[Trial], desc: str = "trials") -> list[Outcome]:
        workers = min(self.workers, len(trials))
        threads = max(1, available_cores() // workers)
        outcomes: list[Outcome] = []
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(threads,))
        try:  # not ``with pool``: its exit would wait for the running trials before an interrupt is seen
            with _bar(len(trials), f"{desc} ({workers} workers)") as bar:
                futures = {pool.submit(execute_on_ranks, trial, self.ranks): trial for trial in trials}
                for future in as_completed(futures):
                    try:
                        outcomes.append(future.result())
                    except BrokenProcessPool as exc:  # a worker was killed: its trial resumes on relaunch
                        outcomes.append(Outcome(futures[future].hash, "failed", f"worker process died ({exc})"))
                    _count(bar, outcomes)
        except BaseException:
            _stop(pool)
            raise
        pool.shutdown()
        return outcomes


def _stop(pool: ProcessPoolExecutor) -> None:
    """On Ctrl-C, SIGTERM or any error: end the workers now (their trials resume on relaunch) and close the
    pool, so that its queues' semaphores are released rather than leaked at exit."""
    for process in list((pool._processes or {}).values()):  # no public way to reach them
        process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def execute_on_ranks(trial: Trial, ranks: int) -> Outcome:
    """A trial run by this process, or with ``ranks > 1`` by that many spawned processes forming
    a process group on this machine, while this one holds the lock and records the outcome."""
    if ranks == 1:
        return execute(trial)
    return execute(trial, runner=functools.partial(_spawn_ranks, trial.kind_entry.run, ranks))


class RankFailed(Exception):
    """A rank of a data-parallel trial raised: its error's last line, then its traceback."""


def _spawn_ranks(run: Any, ranks: int, cfg: dict[str, Any], progress: bool | None = None) -> None:
    from torch.multiprocessing import ProcessRaisedException

    try:
        distributed.spawn(_rank, ranks, run, cfg, backend=distributed.backend(pick_device(cfg["device"])))
    except ProcessRaisedException as exc:
        raise RankFailed(f"rank {exc.error_index}: {str(exc).strip().splitlines()[-1]}\n\n{exc}") from None


def _rank(run: Any, cfg: dict[str, Any]) -> None:
    run(cfg, progress=False)


class TrialJob(submitit.helpers.Checkpointable):
    """A trial in a SLURM job (every task of it). The inherited ``checkpoint`` resubmits the
    same trial when the job is preempted or times out; nothing else is needed, since the trial
    resumes from its run checkpoint."""

    def __call__(self, trial: Trial) -> Outcome | None:
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:
            import torch
            torch.set_num_threads(int(cpus))
        log = functools.partial(print, flush=True)
        if submitit.JobEnvironment().num_tasks == 1:
            return execute(trial, log=log)
        return _as_task(trial, log)


def _as_task(trial: Trial, log: Any) -> Outcome | None:
    """One rank (SLURM task) of a multi-task job. Rank 0 runs ``execute`` (lock, outcome files)
    and tells the others whether it runs the trial (it may be done, or held elsewhere); they
    then run it too and return None (the launcher reads task 0's result)."""
    env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    distributed.join(pick_device(trial.cfg["device"]))
    try:
        if env.rank > 0:
            if distributed.from_rank0(None):
                trial.kind_entry.run(trial.cfg, progress=False)
            return None
        told = []

        def runner(cfg: dict[str, Any], progress: bool | None = None) -> None:
            told.append(distributed.from_rank0(True))
            trial.kind_entry.run(cfg, progress=progress)

        try:
            return execute(trial, log=log, runner=runner)
        finally:
            if not told:
                distributed.from_rank0(False)
    finally:
        dist.destroy_process_group()


@LAUNCHERS.register("slurm", options=SLURM_OPTIONS)
class Slurm(Launcher):
    """One SLURM array task per trial through submitit, in this Python; preempted jobs requeue."""

    poll_s = 2.0

    def __init__(self, sweep_dir: Path | None = None, job_name: str = "sweep", **options: Any):
        super().__init__(sweep_dir=sweep_dir, job_name=job_name)
        self.options = check_options("slurm launcher option", options, SLURM_OPTIONS)
        self.folder = Path(sweep_dir or ".") / ".submitit"

    def executor(self) -> submitit.SlurmExecutor:
        o = self.options
        try:
            executor = submitit.SlurmExecutor(folder=self.folder / "%j", python=shlex.quote(sys.executable),
                                              max_num_timeout=o["max_requeues"])
        except RuntimeError as exc:  # no srun on the PATH
            raise HarnessError(f"launcher slurm needs SLURM's commands (srun, sbatch, squeue) on the PATH: {exc}; "
                               f"accepted launchers: {', '.join(LAUNCHERS.names())}") from None
        params = {"job_name": f"harness-{self.job_name}", "time": o["time_min"], "cpus_per_task": o["cpus_per_task"],
                  "array_parallelism": o["array_parallelism"], "signal_delay_s": o["signal_delay_s"]}
        if o["partition"]:
            params["partition"] = o["partition"]
        if o["gpus_per_node"]:
            params["gpus_per_node"] = o["gpus_per_node"]
        if o["mem_gb"]:
            params["mem"] = f"{int(o['mem_gb'] * 1024)}MB"
        if o["ranks"] > 1:
            params.update(nodes=1, ntasks_per_node=o["ranks"])
        executor.update_parameters(**params)
        return executor

    def ready(self) -> None:
        """SLURM's commands are on the PATH and a controller answers."""
        self.executor()
        _cluster_answers()

    def run(self, trials: list[Trial], desc: str = "trials") -> list[Outcome]:
        self.ready()  # before submitit writes its job pickles
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
                    if job.task(0).paths.result_pickle.exists():  # task 0: rank 0's outcome
                        outcome = _job_outcome(job.task(0), trial)
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


def _cluster_answers() -> None:
    """A HarnessError unless ``sinfo`` reaches a SLURM controller."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HarnessError(f"launcher slurm: no SLURM cluster answers (sinfo: {exc}); nothing was submitted") from None
    if out.returncode != 0:
        detail = (out.stderr or out.stdout).strip()
        reason = shown(detail.splitlines()[-1]) if detail else "no output"
        raise HarnessError(f"launcher slurm: no SLURM cluster answers (sinfo exited {out.returncode}: {reason}); "
                           "nothing was submitted")


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
