"""``harness leaderboard rerun BOARD ENTRY``: one seed of an entry made by the harness, trained again
here, its predictions compared with the entry's stored ones.

The seed is drawn (``random.Random(draw)`` over the entry's chosen runs, by dataset and seed, so
the draw is stated and repeatable), the run's config found by planning the board's sweep specs
(its hash names it; a run on inferred groups is planned with the discoveries it chooses from, which
are trained too), and trained into a scratch folder, never the board folder. Its predictions at
every evaluated checkpoint are compared with the entry's: with the compact predictions it ships
(the predicted class of each published example, and the run's own groups and positions), or with
the stored arrays of its run folder where it ships none. On CPU at the thread count the run
recorded (an entry that records none: ``--threads``, default 1) they must be identical: the same
config, seed and threads give the same numbers. On a GPU, reductions are not ordered, so a
stated tolerance: at most ``GPU_TOLERANCE`` of the predicted classes of a split and checkpoint
may differ (stored float arrays within ``GPU_ATOL`` absolute + relative), and nothing else.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.core import files
from harness.core.errors import HarnessError
from harness.leaderboards import board as boards
from harness.leaderboards import levels, shipped
from harness.sweeps import sweep
from harness.sweeps.launchers import make_launcher
from harness.sweeps.planner import Planner, run_plan

GPU_TOLERANCE = 0.01  # share of predicted classes of one split and checkpoint that may differ on a GPU
GPU_ATOL = 1e-3  # stored float arrays on a GPU: |a - b| <= GPU_ATOL + GPU_ATOL * |b|
DEFAULT_THREADS = 1


@dataclass
class Drawn:
    """The run a rerun trains: its entry's dataset, seed, hash and chosen step, and how it was drawn."""

    dataset: str
    seed: int
    run: str
    step: int
    said: str


@dataclass
class Result:
    drawn: Drawn
    device: str
    threads: int
    threads_from: str
    compared: int = 0  # arrays compared (a split at a checkpoint, or a stored array)
    differences: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rule = "identical" if self.device == "cpu" else f"within the GPU tolerance ({GPU_TOLERANCE:.0%} of predicted classes)"
        return (f"{self.drawn.said}; trained on {self.device} with {self.threads} thread(s) ({self.threads_from}); "
                f"{self.compared} stored prediction array(s) compared, {rule} required")


def draw(entry: dict[str, Any], draw_seed: int) -> Drawn:
    """One of the entry's chosen runs, by ``random.Random(draw_seed)`` over (dataset, seed) in order."""
    choices = sorted((dataset, run["seed"], run["hash"], run["step"]) for dataset, result in entry["results"].items()
                     for run in result["runs"])
    if not choices:
        raise HarnessError(f"entry {entry.get('_path')} lists no chosen runs to re-run")
    dataset, seed, run, step = random.Random(draw_seed).choice(choices)
    return Drawn(dataset, seed, run, step, f"drew seed {seed} on {dataset} (run {run}, chosen step {step}) of "
                                           f"{len(choices)} chosen run(s) by random.Random({draw_seed})")


def run_meta(entry: dict[str, Any], run: str) -> dict[str, Any]:
    return (entry.get("predictions") or {}).get("runs", {}).get(run, {})


def plan_run(board: boards.Board, entry: dict[str, Any], drawn: Drawn, scratch: Path, specs: list[Path]) -> Planner:
    """A planner of the drawn run (by its hash) and the upstream trials it needs, from the specs."""
    if not specs:
        raise HarnessError(f"board {board.name!r} names no sweep specs (key `sweeps` of its definition), so the "
                           "config of its runs is not known here; pass --spec with the spec its entries came from")
    for path in specs:
        plan = sweep.Plan(sweep.load_spec(path), scratch)
        trials, waiting = plan.trials()
        found = [t for t in trials if t.hash == drawn.run]
        if found:
            return Planner(found)
        # a run whose config is completed by its upstream trials (inferred groups): its root and
        # the pool it picks from, for its seed only
        meta = run_meta(entry, drawn.run)
        roots = [w.trial for w in waiting if w.trial.cfg["seed"] == drawn.seed
                 and w.trial.cfg["dataset"]["name"] == drawn.dataset
                 and w.trial.cfg["algorithm"]["name"] == entry["entrant"].get("algorithm")
                 and w.trial.cfg.get("arm", "") == (entry["entrant"].get("arm") or "")
                 and ("hparams_seed" not in meta or w.trial.cfg["algorithm"]["hparams_seed"] == meta["hparams_seed"])]
        if roots:
            pool = [t for t in plan.planner.pool if t.cfg["seed"] == plan.planner.upstream_seed(drawn.seed)]
            return Planner(roots, pool, plan.planner.upstream_seed)
    raise HarnessError(f"no spec of board {board.name!r} ({', '.join(map(str, specs))}) plans run {drawn.run} "
                       f"(seed {drawn.seed} on {drawn.dataset}); pass --spec with the spec it came from")


def train(planner: Planner, scratch: Path, device: str, threads: int) -> None:
    """Every trial of the planner, in waves, on this machine, with the device and threads given
    (neither is hashed, so each trial keeps its folder name)."""
    for trial in [*planner.roots, *planner.pool]:
        trial.cfg.update(device=device, threads=threads)
    report = run_plan(planner, make_launcher("local", scratch, "rerun"))
    if report.failed or report.blocked or report.waiting:
        problems = [*(f"{h} failed: {e.splitlines()[-1] if e else ''}" for h, e in report.failed.items()),
                    *report.blocked, *report.waiting]
        raise HarnessError(f"the re-run did not finish (kept in {scratch}): " + "; ".join(problems))


def compare_compact(board: boards.Board, entry: dict[str, Any], run: str, folder: Path, gpu: bool) -> tuple[int, list[str]]:
    """The fresh run's compact predictions against the entry's shipped ones."""
    path = Path(entry["_path"]).parent / files.simple_name(entry["predictions"]["file"], "predictions.file")
    if not path.is_file() or files.sha256(path) != entry["predictions"]["sha256"]:
        raise HarnessError(f"{path}: missing or altered (sha256 differs from the entry's); "
                           f"`harness leaderboard verify {board.name}` says more")
    stored = {k: v for k, v in files.load_arrays(path).items() if k.startswith(f"{run}/")}
    published = shipped.references(board, entry["entrant"])
    if run_meta(entry, run).get("dataset", "") not in published:
        raise HarnessError(f"board {board.name!r} publishes no reference of run {run}'s dataset")
    fresh = shipped.run_arrays(board, run, folder, published, entry["entrant"], shipped.selected(entry, run))
    return _compare(stored, fresh, gpu, lambda key: key.endswith(".pred"))


def compare_stored(board: boards.Board, stored_run: Path, folder: Path, gpu: bool) -> tuple[int, list[str]]:
    """Every array of the fresh run's evaluations against the stored run's."""
    def arrays(run: Path) -> dict[str, np.ndarray]:
        return {f"{json.dumps(key, sort_keys=True)} {name}": value for key, path in board.scorer.evaluations(run)
                for name, value in files.load_arrays(path).items()}
    return _compare(arrays(stored_run), arrays(folder), gpu, lambda key: False)


def _compare(stored: dict[str, np.ndarray], fresh: dict[str, np.ndarray], gpu: bool,
             is_class: Callable[[str], bool]) -> tuple[int, list[str]]:
    diffs = []
    if set(stored) != set(fresh):
        missing, extra = sorted(set(stored) - set(fresh)), sorted(set(fresh) - set(stored))
        diffs.append(f"arrays differ: stored only {missing[:3]}{' ...' if len(missing) > 3 else ''}, "
                     f"re-run only {extra[:3]}{' ...' if len(extra) > 3 else ''}")
    for key in sorted(set(stored) & set(fresh)):
        a, b = np.asarray(stored[key]), np.asarray(fresh[key])
        if a.shape != b.shape:
            diffs.append(f"{key}: shape {a.shape} stored, {b.shape} re-run")
        elif not gpu or a.dtype.kind not in "fc" and not is_class(key):
            if not np.array_equal(a, b):
                diffs.append(f"{key}: {int((a != b).sum())} of {a.size} value(s) differ")
        elif is_class(key):
            share = float((a != b).mean()) if a.size else 0.0
            if share > GPU_TOLERANCE:
                diffs.append(f"{key}: {share:.1%} of predicted classes differ (tolerance {GPU_TOLERANCE:.0%})")
        elif not np.allclose(b, a, rtol=GPU_ATOL, atol=GPU_ATOL):
            diffs.append(f"{key}: differs by up to {float(np.nanmax(np.abs(a - b))):.3g} (tolerance {GPU_ATOL})")
    return len(set(stored) & set(fresh)), diffs


def rerun(board: boards.Board, entry: dict[str, Any], scratch: Path, draw_seed: int = 0, device: str = "cpu",
          threads: int | None = None, specs: list[Path] | None = None, runs_dir: str | None = None) -> Result:
    """Train one drawn seed of ``entry`` again into ``scratch`` and compare its predictions with the
    stored ones; the differences are in the result (none: the entry may be marked re-run)."""
    level, _ = levels.level_of(entry)
    if level == "claimed":
        raise HarnessError(f"entry {entry['_path']} is claimed (predictions of code that is not ours): only an entry "
                           "made by the harness can be trained again")
    drawn = draw(entry, draw_seed)
    stored_run = Path(runs_dir or entry["provenance"]["sweep"]) / drawn.run
    if not shipped.has_predictions(entry) and not (stored_run / "done").is_file():
        raise HarnessError(f"entry {entry['_path']} ships no predictions and its run {drawn.run} is not in "
                           f"{stored_run.parent}: nothing to compare a re-run with; pass --runs with its sweep folder")
    if (scratch / drawn.run).exists():
        raise HarnessError(f"scratch folder {scratch} already holds run {drawn.run}; give a fresh --scratch folder")
    recorded = run_meta(entry, drawn.run).get("threads")
    if recorded is None and (stored_run / "info.json").is_file():
        recorded = json.loads((stored_run / "info.json").read_text()).get("threads")
    if threads is not None and recorded is not None and threads != recorded and device == "cpu":
        raise HarnessError(f"--threads {threads}: run {drawn.run} recorded {recorded} thread(s); on CPU the "
                           "predictions are compared at the recorded count (leave --threads out)")
    count = int(recorded or threads or DEFAULT_THREADS)
    said = ("the count the run recorded" if recorded else
            f"the entry records no thread count; {'--threads' if threads else 'the default'}")
    result = Result(drawn, device, count, said)
    train(plan_run(board, entry, drawn, scratch, specs if specs is not None else board.sweeps), scratch, device, count)
    folder = scratch / drawn.run
    if not (folder / "done").is_file():
        raise HarnessError(f"the specs planned the run's seed, but not run {drawn.run} (its config changed?); "
                           f"the trials are in {scratch}")
    gpu = device != "cpu"
    if shipped.has_predictions(entry) and not runs_dir:
        result.compared, result.differences = compare_compact(board, entry, drawn.run, folder, gpu)
    else:
        result.compared, result.differences = compare_stored(board, stored_run, folder, gpu)
    return result


def mark(entry: dict[str, Any], result: Result) -> dict[str, Any]:
    """The entry stamped re-run today, with what was trained again."""
    out = {k: v for k, v in entry.items() if k != "_path"}
    out["verification"] = {**levels.stamp("re-run"), "rerun": {
        "dataset": result.drawn.dataset, "seed": result.drawn.seed, "run": result.drawn.run, "device": result.device,
        "threads": result.threads, "compared": result.compared}}
    return out
