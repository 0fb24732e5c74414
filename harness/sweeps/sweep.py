"""Sweeps: a spec expands into trials (algorithm × dataset × group source × hparam draw × seed),
run by a launcher in two phases.

Each trial's folder is ``SWEEP_DIR/<hash of its resolved config>``, so a relaunch skips done
trials and resumes interrupted ones from their checkpoints. Discovery trials (a group source
``inferred:<method>``) run first; the trials that train on their groups are planned only once
they are done, because their config names the discovery run they use: for each (method,
dataset, seed), the best of the method's hparam draws by ``harness.runs.discovery.best_discovery``
(XRM's rule: the largest final flip rate).

A spec (YAML)::

    name: demo                          # default: the file's stem; the sweep dir is sweeps/<name>
    datasets: [colored_digits]          # names, or {name: ..., options: {...}}
    algorithms:                         # names (crossed with `groups`), or
      - erm                             # {name: ..., groups: [...], overrides: {...}}
      - {name: group_dro, overrides: {algorithm.hparams.eta: 0.05}}
      - group_dro                       # a second arm of group_dro: its trials' `arm` is ""
    groups: [annotated]                 # annotated | classes | none | inferred:<discovery method>
    hparam_draws: 4                     # draws 0..3 of every hparam space (0 = the defaults)
    seeds: 3                            # seeds 0..2 (or a list)
    overrides: {steps: 600, eval_every: 50}
    discovery:                          # needed by `inferred:<method>` group sources
      algorithms: [xrm]                 # names, or {name: ..., overrides: {...}, hparam_draws: N}
      hparam_draws: 2
      seeds: paired                     # paired: one discovery per seed; shared: seed 0 for all
      overrides: {steps: 400}           # applied over the sweep's overrides; groups are `none`
    launcher: {name: processes, workers: 2}   # or local, processes:2 (shorthand), or
                                        # {name: slurm, partition: debug, time_min: 60, mem_gb: 4, ...}
    kind: train                         # the trials' kind: train, or probe (overrides then set
                                        # probe.tasks: each trial trains its network, then probes it)

Each trial's config carries ``arm``: the label of its arm's own overrides (:func:`arm_label`), not
hashed, so that two arms of one algorithm that differ only in their overrides stay apart.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.core import config as configs
from harness.core import files
from harness.core.errors import HarnessError, shown, unknown
from harness.core.options import Option
from harness.core.registry import TRIAL_KINDS
from harness.runs import discovery as discoveries
from harness.sweeps.launchers import LauncherChoice, parse_launcher
from harness.sweeps.trials import Outcome, Trial, is_done, state

SPEC_KEYS = ("name", "datasets", "algorithms", "groups", "hparam_draws", "seeds", "overrides",
             "discovery", "launcher", "kind")
DISCOVERY_KEYS = ("algorithms", "hparam_draws", "seeds", "overrides")
DISCOVERY_SEEDS = ("paired", "shared")
# What the spec's values accept (its mappings' keys are checked where they are read).
SEEDS = Option(1, (Option(type=int, low=1), Option(type=list, items=Option(type=int, low=0), non_empty=True)),
               "a count n (seeds 0..n-1) or a list of seeds")
DISCOVERY_SEEDS_OPTION = Option("paired", str, "paired: one discovery per seed; shared: seed 0 for all",
                                choices=DISCOVERY_SEEDS)
COUNT = Option(1, int, low=1)
NAME = Option(type=str, noun="name")
NON_EMPTY_LIST = Option(type=list, non_empty=True)
PLAIN_GROUPS = ("annotated", "classes", "none")
INFERRED = configs.INFERRED
# Set by the sweep's own axes; an override may not change them.
RESERVED = ("algorithm.name", "algorithm.hparams_seed", "dataset", "seed", "groups", "arm", "run_dir", "output_dir")
SPEC_FILE = "sweep.yaml"
# How often a sweep looks again at trials another process is training.
BUSY_POLL_S = 5.0


@dataclass
class Arm:
    """One algorithm trained on one group source, with its own overrides."""

    algorithm: str
    groups: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return arm_label(self.overrides)


def arm_label(overrides: dict[str, Any]) -> str:
    """An arm's name among the arms of its algorithm: its own dotted overrides as sorted
    ``key=value`` pairs (values as compact JSON), joined by one space; "" without any."""
    return " ".join(f"{key}={json.dumps(value, sort_keys=True, separators=(',', ':'), default=str)}"
                    for key, value in sorted(overrides.items()))


@dataclass
class Spec:
    name: str
    datasets: list[dict[str, Any]]
    arms: list[Arm]
    hparam_draws: int
    seeds: list[int]
    overrides: dict[str, Any]
    discovery: dict[str, Method]
    discovery_draws: int
    discovery_seeds: str
    discovery_overrides: dict[str, Any]
    launcher: LauncherChoice
    raw: dict[str, Any]
    kind: str = "train"


def load_spec(path: str | Path) -> Spec:
    raw = files.read_yaml_mapping(path, "sweep spec", f"; keys: {', '.join(SPEC_KEYS)}")
    raw.setdefault("name", Path(path).stem)
    return parse_spec(raw)


def parse_spec(raw: dict[str, Any]) -> Spec:
    """Check every key of a spec; name what is wrong and what is accepted."""
    if "slurm" in raw:
        raise HarnessError("sweep spec key 'slurm' has moved: SLURM options are options of the slurm launcher, "
                           "e.g. launcher: {name: slurm, partition: debug, time_min: 60}; "
                           "`harness list launchers` shows every option")
    for key in raw:
        if key not in SPEC_KEYS:
            raise unknown("sweep spec key", key, SPEC_KEYS)
    datasets = [_dataset_item(d) for d in _list(raw, "datasets", None)]
    names = [d["name"] for d in datasets]
    if len(set(names)) != len(names):
        raise HarnessError(f"sweep spec: datasets {names} name a dataset twice; one entry per dataset")
    groups = [_str(g, "groups") for g in _list(raw, "groups", ["annotated"])]
    arms = [arm for item in _list(raw, "algorithms", None) for arm in _arms(item, groups)]
    disc = raw.get("discovery") or {}
    if not isinstance(disc, dict):
        raise HarnessError(f"sweep spec key 'discovery' must be a mapping with keys {', '.join(DISCOVERY_KEYS)}")
    for key in disc:
        if key not in DISCOVERY_KEYS:
            raise unknown("sweep spec key", f"discovery.{key}", [f"discovery.{k}" for k in DISCOVERY_KEYS])
    methods = dict(_discovery_method(m) for m in _list(disc, "algorithms", None)) if disc else {}
    for arm in arms:
        method = arm.groups[len(INFERRED):] if arm.groups.startswith(INFERRED) else None
        if method is not None and "/" not in method and method not in methods:
            accepted = [INFERRED + m for m in methods] + [INFERRED + "<path of a discovery run folder>"]
            raise HarnessError(f"sweep spec: group source {arm.groups!r} of {arm.algorithm} names no method of "
                               f"discovery.algorithms; accepted: {', '.join(accepted)}")
        if method is None and arm.groups not in PLAIN_GROUPS:
            raise unknown("group source", arm.groups, [*PLAIN_GROUPS, "inferred:<discovery method>"])
    seeds = SEEDS.check("sweep spec key 'seeds'", raw.get("seeds", SEEDS.default))
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    discovery_seeds = DISCOVERY_SEEDS_OPTION.check("sweep spec key 'discovery.seeds'",
                                                   disc.get("seeds", DISCOVERY_SEEDS_OPTION.default))
    launcher = parse_launcher(raw.get("launcher", "local"), "sweep spec key 'launcher'")
    kinds = [k for k in TRIAL_KINDS.names() if k != "discovery"]
    kind = Option("train", str, choices=tuple(kinds)).check("sweep spec key 'kind'", raw.get("kind", "train"))
    overrides = _overrides(raw.get("overrides"), "overrides")
    if kind == "probe":
        _check_probe_tasks(overrides, arms)
    return Spec(
        name=files.simple_name(raw.get("name", "sweep"), "sweep spec key 'name' (the sweep folder's name)"),
        datasets=datasets, arms=arms,
        hparam_draws=_count(raw, "hparam_draws"), seeds=sorted(set(seed_list)),
        overrides=overrides, discovery=methods,
        discovery_draws=_count(disc, "hparam_draws", "discovery."), discovery_seeds=discovery_seeds,
        discovery_overrides=_overrides(disc.get("overrides"), "discovery.overrides"),
        launcher=launcher, raw=raw, kind=kind,
    )


def _check_probe_tasks(overrides: dict[str, Any], arms: list[Arm]) -> None:
    """A probe sweep names its downstream tasks (in overrides or every arm's), so that no trial
    starts only to fail for the want of them."""
    missing = sorted({arm.algorithm for arm in arms if not {**overrides, **arm.overrides}.get("probe.tasks")})
    if missing:
        raise HarnessError(f"sweep spec kind probe needs probe.tasks (a non-empty list of downstream tasks) in "
                           f"overrides or in the overrides of {', '.join(missing)}, e.g. overrides: "
                           "{probe: {tasks: [digits]}}; the tasks: `harness list tasks`")


def _list(raw: dict, key: str, default: list | None) -> list:
    value = raw.get(key, default)
    if value is None:
        raise HarnessError(f"sweep spec needs {key!r}: a list (see `harness sweep --help`)")
    if isinstance(value, (str, dict)):
        value = [value]
    return NON_EMPTY_LIST.check(f"sweep spec key {key!r}", value)


def _str(value: Any, key: str) -> str:
    return NAME.check(f"each item of sweep spec key {key!r}", value)


def _count(raw: dict, key: str, prefix: str = "") -> int:
    return COUNT.check(f"sweep spec key '{prefix}{key}'", raw.get(key, COUNT.default))


def _dataset_item(item: Any) -> dict[str, Any]:
    if isinstance(item, str):
        return {"name": item, "options": {}}
    if (isinstance(item, dict) and set(item) <= {"name", "options"} and isinstance(item.get("name"), str)
            and isinstance(item.get("options") or {}, dict)):
        return {"name": item["name"], "options": dict(item.get("options") or {})}
    raise HarnessError(f"sweep spec: a dataset is a name or {{name: ..., options: {{...}}}}, got {shown(item)}")


@dataclass
class Method:
    """A discovery method with its own overrides (over the sweep's and the discovery block's)
    and, if set, its own number of hparam draws (e.g. one for an error set, which has no
    annotation-free rule to choose among draws)."""

    overrides: dict[str, Any]
    hparam_draws: int | None = None


def _discovery_method(item: Any) -> tuple[str, Method]:
    if isinstance(item, str) and item:
        return item, Method({})
    if isinstance(item, dict) and isinstance(item.get("name"), str) and set(item) <= {"name", "overrides",
                                                                                      "hparam_draws"}:
        name = item["name"]
        return name, Method(_overrides(item.get("overrides"), f"overrides of discovery method {name}"),
                            _count(item, "hparam_draws", f"discovery.algorithms.{name}.") if "hparam_draws" in item
                            else None)
    raise HarnessError("sweep spec: a discovery method is a name or {name: ..., overrides: {...}, hparam_draws: N}, "
                       f"got {shown(item)}")


def _arms(item: Any, groups: list[str]) -> list[Arm]:
    if isinstance(item, str):
        return [Arm(item, g) for g in groups]
    if isinstance(item, dict) and isinstance(item.get("name"), str) and set(item) <= {"name", "groups", "overrides"}:
        own = [_str(g, "groups") for g in _list(item, "groups", groups)]
        overrides = _overrides(item.get("overrides"), f"overrides of {item['name']}")
        return [Arm(item["name"], g, overrides) for g in own]
    raise HarnessError(f"sweep spec: an algorithm is a name or {{name: ..., groups: [...], overrides: {{...}}}}, "
                       f"got {shown(item)}")


def _overrides(value: Any, where: str) -> dict[str, Any]:
    """Dotted keys, from a nested or dotted mapping; keys the sweep sets itself are refused."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HarnessError(f"sweep spec: {where} must be a mapping of config keys to values, got {shown(value)}")
    flat = _flatten(value)
    for key in flat:
        if any(key == r or key.startswith(r + ".") for r in RESERVED):
            raise HarnessError(f"sweep spec: {where} sets {key!r}, which the sweep sets itself; use the spec's "
                               "datasets, algorithms, groups, hparam_draws and seeds keys")
    return flat


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --- planning -----------------------------------------------------------------------------

def resolve_trial(kind: str, sweep_dir: Path, dataset: dict, algorithm: str, groups: str, config_groups: str,
                  draw: int, seed: int, *overrides: dict[str, Any], arm: str = "") -> Trial:
    """The trial at one point of the sweep's axes: overrides (later layers win), then the axes;
    resolved, and placed in ``sweep_dir/<its hash>``."""
    raw: dict[str, Any] = {}
    for layer in overrides:
        for key, value in layer.items():
            configs.set_dotted(raw, key, copy.deepcopy(value))
    raw.update({"dataset": copy.deepcopy(dataset), "groups": config_groups, "seed": seed, "arm": arm,
                "output_dir": str(sweep_dir)})
    raw.setdefault("algorithm", {}).update({"name": algorithm, "hparams_seed": draw})
    cfg = configs.resolve(raw)
    cfg["run_dir"] = str(sweep_dir / configs.config_hash(cfg))
    return Trial(kind, cfg, groups)


class Plan:
    """The trials of a spec in a sweep folder (an absolute path: SLURM jobs and worker
    processes may run elsewhere)."""

    def __init__(self, spec: Spec, sweep_dir: str | Path):
        self.spec, self.dir = spec, Path(sweep_dir).resolve()
        self.discovery = unique([
            resolve_trial("discovery", self.dir, d, method, "none", "none", draw, seed,
                          spec.overrides, spec.discovery_overrides, own.overrides)
            for d in spec.datasets for method, own in spec.discovery.items()
            for draw in range(own.hparam_draws or spec.discovery_draws)
            for seed in self._discovery_seeds()
        ])
        # Downstream configs are checked now with a stand-in folder, so bad input stops before any run.
        for d in spec.datasets:
            for arm in spec.arms:
                self._trial(d, arm, 0, spec.seeds[0], arm.groups if not self._needs(arm) else INFERRED + "pending")

    def _discovery_seeds(self) -> list[int]:
        return self.spec.seeds if self.spec.discovery_seeds == "paired" else [0]

    @staticmethod
    def _needs(arm: Arm) -> str | None:
        """The discovery method an arm waits for, if any."""
        if arm.groups.startswith(INFERRED) and "/" not in arm.groups:
            return arm.groups[len(INFERRED):]
        return None

    def _trial(self, dataset: dict, arm: Arm, draw: int, seed: int, config_groups: str) -> Trial:
        return resolve_trial(self.spec.kind, self.dir, dataset, arm.algorithm, arm.groups, config_groups, draw, seed,
                             self.spec.overrides, arm.overrides, arm=arm.label)

    def downstream(self) -> tuple[list[Trial], list[str]]:
        """Trials that train on a group source, and what cannot be planned yet (a discovery
        they depend on is not done), as messages."""
        trials, waiting = [], []
        for d in self.spec.datasets:
            for arm in self.spec.arms:
                for seed in self.spec.seeds:
                    groups = arm.groups
                    method = self._needs(arm)
                    if method is not None:
                        found = self.best_discovery(d["name"], method, seed)
                        if isinstance(found, str):
                            waiting += [f"{arm.algorithm} ({arm.groups}) on {d['name']}, seed {seed}: {found}"] \
                                * self.spec.hparam_draws
                            continue
                        groups = INFERRED + str(found)
                    trials += [self._trial(d, arm, draw, seed, groups) for draw in range(self.spec.hparam_draws)]
        return unique(trials), waiting

    def best_discovery(self, dataset: str, method: str, seed: int) -> Path | str:
        """The discovery run downstream seed ``seed`` uses, or why there is none yet."""
        discovery_seed = seed if self.spec.discovery_seeds == "paired" else 0
        runs = [t for t in self.discovery if t.cfg["dataset"]["name"] == dataset
                and t.cfg["algorithm"]["name"] == method and t.cfg["seed"] == discovery_seed]
        pending = [t for t in runs if not is_done(t)]
        if pending:
            states = sorted({state(t) for t in pending})
            return f"waiting for {len(pending)} {method} discovery run(s) ({', '.join(states)})"
        return Path(discoveries.best_discovery([t.dir for t in runs]))


def unique(trials: list[Trial]) -> list[Trial]:
    """One trial per hash (a spec may name the same run twice, e.g. an algorithm listed twice)."""
    seen: set[str] = set()
    out = []
    for trial in trials:
        if trial.hash not in seen:
            seen.add(trial.hash)
            out.append(trial)
    return out


# --- running ------------------------------------------------------------------------------

@dataclass
class Report:
    """What a launch did: counts by outcome, failures (hash → error) and unplanned trials.
    ``elsewhere``: trials another process (another sweep) was training and finished."""

    ran: int = 0
    skipped: int = 0
    resumed: int = 0
    elsewhere: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)

    def add(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if o.status == "done":
                self.ran += 1
            elif o.status != "busy":
                self.failed[o.hash] = o.error or "failed"

    @property
    def ok(self) -> bool:
        return not (self.failed or self.waiting)


def save_spec(spec: Spec, sweep_dir: Path) -> None:
    """The spec beside its trials, so that ``status`` and ``collect`` know what was planned. A
    relaunch with a grown spec (more seeds, draws, algorithms) replaces it; trials are reused by hash."""
    files.write_text(Path(sweep_dir) / SPEC_FILE, yaml.safe_dump(spec.raw, sort_keys=False))


def run_sweep(spec: Spec, sweep_dir: str | Path, launcher: Any) -> Report:
    """Phase 1: discovery trials; phase 2: the trials that train, planned from phase 1's
    results. Done trials are skipped, never resubmitted."""
    plan = Plan(spec, sweep_dir)
    save_spec(spec, plan.dir)
    report = Report()
    _launch(plan.discovery, launcher, "discovery trials", report)
    trials, report.waiting = plan.downstream()
    _launch(trials, launcher, "trials", report)
    return report


def _launch(trials: list[Trial], launcher: Any, desc: str, report: Report) -> None:
    """Run what is not done. Trials another live process holds (a concurrent sweep) are waited
    for, then counted as done elsewhere, or run here if that process left them unfinished, so
    that sweeps sharing a folder each end knowing every trial's outcome."""
    todo = [t for t in trials if not is_done(t)]
    report.skipped += len(trials) - len(todo)
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


def load_plan(sweep_dir: str | Path) -> Plan:
    path = Path(sweep_dir) / SPEC_FILE
    if not path.exists():
        raise HarnessError(f"{str(sweep_dir)!r} is not a sweep folder (no {SPEC_FILE}); "
                           "pass the folder `harness sweep SPEC.yaml` ran into")
    return Plan(parse_spec(files.read_yaml_mapping(path, "sweep spec")), sweep_dir)


def status(plan: Plan) -> tuple[list[tuple[Trial, str]], list[str]]:
    """Every planned trial with its state (one of trials.STATES), and the trials that wait
    for discovery (counted as not started)."""
    trials, waiting = plan.downstream()
    return [(t, state(t)) for t in plan.discovery + trials], waiting

