"""Trials that depend on trials: planned once each, run in waves, blocked by a failed upstream.

A trial's upstream trials come from what its kind and its config sections declare
(:class:`harness.core.registry.Need`): the pretraining run of a probe (a fixed config), or the
discoveries a trial on inferred groups chooses among once they are done (trials the sweep plans
itself, picked by ``match``; the choice ``complete``\\ s the dependent's config, hence its hash).
The planner knows neither probes nor groups: a new chain (pretrain → visualize) is a ``needs`` on
a new trial kind.

Every upstream trial is planned by its own config hash, in ``output_dir/<hash>`` (a sweep's
folder), so two dependents of one pretraining share it. :func:`run_plan` launches, in one
``launcher.run`` call per wave, every trial whose upstream trials are done, then plans again;
each trial runs under its lock (harness.sweeps.trials.execute) wherever the launcher puts it.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from harness.core import config as configs
from harness.core.errors import HarnessError
from harness.core.registry import SECTIONS, TRIAL_KINDS, Need
from harness.sweeps.trials import STATES, Outcome, Trial, is_done, state

# A trial not done whose upstream failed (or is itself blocked) cannot run: it is blocked.
PLAN_STATES = (*STATES, "blocked")
# How often a launch looks again at trials another process is training.
BUSY_POLL_S = 5.0


def needs_of(trial: Trial) -> list[Need]:
    """What a trial waits for: its kind's needs, then those of its config sections."""
    found = list(TRIAL_KINDS.get(trial.kind).obj.needs(trial.cfg))
    for entry in SECTIONS.entries():
        if entry.name in trial.cfg:
            found += entry.obj.needs(trial.cfg)
    return found


def placed(kind: str, cfg: dict[str, Any], axes: dict[str, Any] | None = None) -> Trial:
    """A trial of ``kind`` in ``output_dir/<hash of cfg>``."""
    cfg = copy.deepcopy(cfg)
    cfg["run_dir"] = None
    cfg["run_dir"] = str(configs.run_dir(cfg))
    return Trial(kind, cfg, dict(axes or {}))


def dotted(cfg: dict[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def describe(trial: Trial) -> str:
    """A trial as planned, before its config is complete: algorithm, axes, dataset, seed."""
    c = trial.cfg
    axes = f" ({' '.join(str(v) for v in trial.axes.values())})" if trial.axes else ""
    return f"{c['algorithm']['name']}{axes} on {c['dataset']['name']}, seed {c['seed']}"


@dataclass
class Waiting:
    """A trial whose config waits for upstream trials to be done (``upstream``: those planned)."""

    trial: Trial
    need: Need
    upstream: list[Trial]

    def message(self) -> str:
        pending = [t for t in self.upstream if not is_done(t)]
        states = ", ".join(sorted({state(t) for t in pending})) or "not planned"
        return f"{describe(self.trial)}: waiting for {len(pending)} {self.need.label} run(s) ({states})"


class Planner:
    """The trials ``roots`` stand for, with their upstream trials. ``pool``: the trials a
    ``match`` need picks from (a sweep's discoveries); ``upstream_seed(seed)``: the seed of the
    pool trials a dependent of seed ``seed`` picks (a sweep's discovery.seeds)."""

    def __init__(self, roots: Iterable[Trial], pool: Iterable[Trial] = (),
                 upstream_seed: Callable[[int], int] = lambda seed: seed):
        self.roots, self.pool, self.upstream_seed = list(roots), list(pool), upstream_seed

    def check(self) -> None:
        """A HarnessError (one line) for a need no planned trial can meet, or for a trial its kind
        would refuse (``check`` of its kind, on every root, pool and upstream trial, each config
        once; a config completed by upstream trials is checked as planned, before completion);
        nothing is run or written."""
        for root in self.roots:
            for need in needs_of(root):
                if need.match is not None and not self._matching(need, root):
                    raise HarnessError(f"sweep spec: {need.unmet}")
        checked: set[str] = set()
        for trial in self.pool + self.roots:
            upstream = [placed(need.kind, cfg) for need in needs_of(trial) for cfg in need.configs]
            for t in (*upstream, trial):
                if t.hash not in checked:
                    checked.add(t.hash)
                    try:
                        t.kind_entry.check(t.cfg)
                    except HarnessError as exc:
                        raise HarnessError(f"{t.kind} trial {describe(t)}: {exc}") from exc

    def plan(self) -> tuple[list[Trial], list[Waiting]]:
        """Every trial that can be planned now (each once, upstream before dependents, each with
        ``needs``: the hashes of its upstream trials), and those that wait."""
        self._trials: dict[str, Trial] = {}
        waiting: list[Waiting] = []
        for trial in self.pool + self.roots:
            self._place(trial, waiting)
        return list(self._trials.values()), waiting

    def possible(self, trial: Trial) -> set[str]:
        """Every hash the root ``trial`` may get, planned without running anything: its own, or,
        where its config is completed by upstream trials it chooses among, one per choice."""
        configs_ = [trial.cfg]
        for need in needs_of(trial):
            if need.complete is None:
                continue
            if need.chosen is None:
                raise HarnessError(f"{describe(trial)}: its {need.label} need declares no `chosen`, so the "
                                   "configs it may lead to cannot be planned")
            upstream = self._matching(need, trial) if need.match is not None else \
                [placed(need.kind, cfg) for cfg in need.configs]
            configs_ = [need.chosen(cfg, u.dir) for cfg in configs_ for u in upstream]
        return {placed(trial.kind, cfg).hash for cfg in configs_}

    def _matching(self, need: Need, trial: Trial) -> list[Trial]:
        seed = self.upstream_seed(trial.cfg["seed"])
        return [t for t in self.pool if t.kind == need.kind and t.cfg["seed"] == seed
                and all(dotted(t.cfg, k) == v for k, v in (need.match or {}).items())]

    def _place(self, trial: Trial, waiting: list[Waiting], chosen_from: tuple[str, ...] = ()) -> Trial | None:
        """The trial as planned now (None while it waits); ``chosen_from``: the upstream trials
        its config was completed from, which it lists among its needs."""
        needs = needs_of(trial)
        for need in needs:
            if need.complete is None:
                continue
            upstream = self._matching(need, trial) if need.match is not None else \
                [placed(need.kind, cfg) for cfg in need.configs]
            if not upstream:
                raise HarnessError(f"sweep spec: {need.unmet}")
            found = [self._place(u, waiting) for u in upstream]
            done = [u for u in found if u is not None and is_done(u)]
            if len(done) < len(upstream):
                waiting.append(Waiting(trial, need, [u for u in found if u is not None]))
                return None
            return self._place(placed(trial.kind, need.complete(trial.cfg, [u.dir for u in done]), trial.axes),
                               waiting, (*chosen_from, *(u.hash for u in done)))
        upstream_hashes = list(chosen_from)
        for need in needs:
            for cfg in need.configs:
                up = self._place(placed(need.kind, cfg), waiting)
                if up is None:
                    waiting.append(Waiting(trial, need, []))
                    return None
                upstream_hashes.append(up.hash)
        trial = replace(trial, needs=tuple(dict.fromkeys(upstream_hashes)))
        return self._trials.setdefault(trial.hash, trial)


def blocked(trials: list[Trial], waiting: list[Waiting], failed: Callable[[Trial], bool]) -> dict[int, str]:
    """For each trial or waiting entry (by ``id``) that cannot run because an upstream trial
    failed (or is blocked itself): that upstream's hash."""
    by_hash = {t.hash: t for t in trials}
    out: dict[int, str] = {}
    changed = True
    while changed:  # upstream trials come first, but a root may also be another's upstream
        changed = False
        for t in trials:
            if id(t) in out or is_done(t):
                continue
            culprit = next((h for h in t.needs if failed(by_hash[h]) or id(by_hash[h]) in out), None)
            if culprit is not None:
                out[id(t)], changed = culprit, True
    for w in waiting:
        culprit = next((u.hash for u in w.upstream if failed(u) or id(u) in out), None)
        if culprit is not None:
            out[id(w)] = culprit
    return out


@dataclass
class Report:
    """What a launch did: counts by outcome, failures (hash → error), trials that could not be
    planned (``waiting``) and trials blocked by a failed upstream (one line each, naming it).
    ``elsewhere``: trials another process (another sweep) was training and finished."""

    ran: int = 0
    skipped: int = 0
    resumed: int = 0
    elsewhere: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def add(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if o.status == "done":
                self.ran += 1
            elif o.status == "found done":
                self.elsewhere += 1
            elif o.status != "busy":
                self.failed[o.hash] = o.error or "failed"

    @property
    def ok(self) -> bool:
        return not (self.failed or self.waiting or self.blocked)


def run_plan(planner: Planner, launcher: Any) -> Report:
    """Waves: launch every trial not done whose upstream trials are done (failed ones of an
    earlier launch are retried once), then plan again, until nothing more can run. Done trials
    are skipped, never resubmitted."""
    report = Report()
    attempted: set[str] = set()
    counted: set[str] = set()
    while True:
        trials, waiting = planner.plan()
        by_hash = {t.hash: t for t in trials}
        for t in trials:
            if t.hash not in attempted and t.hash not in counted and is_done(t):
                report.skipped += 1
                counted.add(t.hash)
        stopped = blocked(trials, waiting, lambda t: t.hash in attempted and not is_done(t))
        ready = [t for t in trials if t.hash not in attempted and not is_done(t) and id(t) not in stopped
                 and all(is_done(by_hash[h]) for h in t.needs)]
        if not ready:
            break
        attempted.update(t.hash for t in ready)
        kinds = ", ".join(dict.fromkeys(t.kind for t in ready))
        _launch(ready, launcher, f"{kinds} trials", report)
    culprit = {h: "failed" if h in attempted else "blocked" for h in stopped.values()}
    report.blocked = [f"{t.hash} ({t.label}): blocked by {stopped[id(t)]} ({by_hash[stopped[id(t)]].kind}, "
                      f"{culprit[stopped[id(t)]]})" for t in trials if id(t) in stopped]
    report.blocked += [f"{describe(w.trial)}: blocked by {stopped[id(w)]} ({by_hash[stopped[id(w)]].kind}, "
                       f"{culprit[stopped[id(w)]]})" for w in waiting if id(w) in stopped]
    report.waiting = [w.message() for w in waiting if id(w) not in stopped]
    return report


def _launch(todo: list[Trial], launcher: Any, desc: str, report: Report) -> None:
    """Run trials that are not done. Trials another live process holds (a concurrent sweep) are
    waited for, then counted as done elsewhere, or run here if that process left them
    unfinished, so that sweeps sharing a folder each end knowing every trial's outcome."""
    report.resumed += sum(state(t) == "interrupted" for t in todo)
    while todo:
        outcomes = launcher.run(todo, desc=desc)
        report.add(outcomes)
        busy = {o.hash for o in outcomes if o.status == "busy"}
        todo = [t for t in todo if t.hash in busy]
        if todo:
            print(f"{len(todo)} trial(s) are being trained by another process; waiting for them", flush=True)
        while todo and any(state(t) == "running" for t in todo):
            time.sleep(BUSY_POLL_S)
        report.elsewhere += sum(is_done(t) for t in todo)
        todo = [t for t in todo if not is_done(t)]


@dataclass
class Status:
    """Every planned trial and every waiting one with its state (one of PLAN_STATES; a waiting
    trial is ``blocked`` or ``not started``); ``by_hash``: the planned trials; ``culprits``: for
    each blocked trial or waiting entry (by ``id``), the hash of the upstream trial that stops it."""

    trials: list[tuple[Trial, str]]
    waiting: list[tuple[Waiting, str]]
    by_hash: dict[str, Trial]
    culprits: dict[int, str]

    def blocked_lines(self) -> list[str]:
        """``<what>: blocked by <hash> (<kind>, <its state>)``, one per blocked trial."""
        states = dict((t.hash, s) for t, s in self.trials)
        out = [(f"{t.hash} ({t.label})", self.culprits[id(t)]) for t, s in self.trials if s == "blocked"]
        out += [(describe(w.trial), self.culprits[id(w)]) for w, s in self.waiting if s == "blocked"]
        return [f"{what}: blocked by {h} ({self.by_hash[h].kind}, {states[h]})" for what, h in out]


def states(planner: Planner) -> Status:
    trials, waiting = planner.plan()
    stopped = blocked(trials, waiting, lambda t: state(t) == "failed")
    return Status([(t, "blocked" if id(t) in stopped else state(t)) for t in trials],
                  [(w, "blocked" if id(w) in stopped else "not started") for w in waiting],
                  {t.hash: t for t in trials}, stopped)


def resolved_run(kind: str, cfg: dict[str, Any]) -> Trial:
    """The trial of ``kind`` a single run command names (in its config's run folder)."""
    cfg = copy.deepcopy(cfg)
    cfg["run_dir"] = str(Path(configs.run_dir(cfg)))
    return Trial(kind, cfg)
