"""Sweeps: a spec expands into trials (algorithm × dataset × axes × hparam draw × seed), which
the planner (harness.sweeps.planner) runs in waves, each trial after the trials it needs.

Each trial's folder is ``SWEEP_DIR/<hash of its resolved config>``, so a relaunch skips done
trials and resumes interrupted ones from their checkpoints. What a trial waits for is declared
by its kind and its config sections, not by the sweep: a probe trial needs its pretraining run;
a trial on groups ``inferred:<method>`` (the worst-group protocol's) needs the sweep's
discoveries of that method, dataset and seed, and trains on the best of them (XRM's rule: the
largest final flip rate), so it is planned only once they are done.

A spec (YAML)::

    name: demo                          # default: the file's stem; the sweep dir is sweeps/<name>
    datasets: [colored_digits]          # names, or {name: ..., options: {...}}
    algorithms:                         # names (crossed with the axes), or
      - erm                             # {name: ..., axes: {...}, groups: [...], overrides: {...}}
      - {name: group_dro, overrides: {algorithm.hparams.eta: 0.05}}
      - group_dro                       # a second arm of group_dro: its trials' `arm` is ""
    axes:                               # any config key with a list of values, crossed
      groups: [annotated, classes]      # (an arm's own axes replace the spec's of the same key)
      backbone.options.last_width: [16, 32]
    groups: [annotated]                 # the same as axes: {groups: [...]} (also in an arm item):
                                        # annotated | classes | none | inferred:<discovery method>
    hparam_draws: 4                     # draws 0..3 of every hparam space (0 = the defaults)
    seeds: 3                            # seeds 0..2 (or a list)
    overrides: {steps: 600, eval_every: 50}
    discovery:                          # discovery trials, for `inferred:<method>` groups
      algorithms: [xrm]                 # names, or {name: ..., overrides: {...}, hparam_draws: N}
      hparam_draws: 2
      seeds: paired                     # paired: one discovery per seed; shared: seed 0 for all
      overrides: {steps: 400}           # applied over the sweep's overrides; groups are `none`
    launcher: {name: processes, workers: 2}   # or local, processes:2 (shorthand), or
                                        # {name: slurm, partition: debug, time_min: 60, mem_gb: 4, ...}
    kind: train                         # the trials' kind: train, or probe (overrides then set
                                        # probe.tasks; each pretraining run is a trial of its own)

Each trial's config carries ``arm``: the label of its arm's own overrides (:func:`arm_label`), not
hashed, so that two arms of one algorithm that differ only in their overrides stay apart.
"""
from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.core import config as configs
from harness.core import files
from harness.core.errors import HarnessError, shown, unknown
from harness.core.options import Option
from harness.core.registry import TRIAL_KINDS
from harness.sweeps.launchers import LauncherChoice, parse_launcher
from harness.sweeps.planner import Planner, Report, Waiting, needs_of, run_plan
from harness.sweeps.planner import states as plan_states
from harness.sweeps.trials import Trial

SPEC_KEYS = ("name", "datasets", "algorithms", "axes", "groups", "hparam_draws", "seeds", "overrides",
             "discovery", "launcher", "kind")
ARM_KEYS = ("name", "axes", "groups", "overrides")
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
# Set by the sweep itself; neither an override nor an axis may change them.
RESERVED = ("algorithm.name", "algorithm.hparams_seed", "dataset", "seed", "arm", "run_dir", "output_dir")
SPEC_FILE = "sweep.yaml"
# The spec key that is a spelling of the axis of the same name (the worst-group protocol's).
LEGACY_AXES = ("groups",)


@dataclass
class Arm:
    """One algorithm at one point of the axes (config key → value), with its own overrides."""

    algorithm: str
    point: dict[str, Any] = field(default_factory=dict)
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
    axes: list[str] = field(default_factory=list)  # the axes' config keys, as tables show them


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
    axes = _axes(raw, "")
    arms = [arm for item in _list(raw, "algorithms", None) for arm in _arms(item, axes)]
    disc = raw.get("discovery") or {}
    if not isinstance(disc, dict):
        raise HarnessError(f"sweep spec key 'discovery' must be a mapping with keys {', '.join(DISCOVERY_KEYS)}")
    for key in disc:
        if key not in DISCOVERY_KEYS:
            raise unknown("sweep spec key", f"discovery.{key}", [f"discovery.{k}" for k in DISCOVERY_KEYS])
    methods = dict(_discovery_method(m) for m in _list(disc, "algorithms", None)) if disc else {}
    seeds = SEEDS.check("sweep spec key 'seeds'", raw.get("seeds", SEEDS.default))
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    discovery_seeds = DISCOVERY_SEEDS_OPTION.check("sweep spec key 'discovery.seeds'",
                                                   disc.get("seeds", DISCOVERY_SEEDS_OPTION.default))
    launcher = parse_launcher(raw.get("launcher", "local"), "sweep spec key 'launcher'")
    kinds = [k for k in TRIAL_KINDS.names() if k != "discovery"]
    kind = Option("train", str, choices=tuple(kinds)).check("sweep spec key 'kind'", raw.get("kind", "train"))
    overrides = _overrides(raw.get("overrides"), "overrides")
    for arm in arms:
        clash = sorted(k for k in {**overrides, **arm.overrides} for a in arm.point if k == a or k.startswith(a + "."))
        if clash:
            raise HarnessError(f"sweep spec: the overrides of {arm.algorithm} set {clash[0]!r}, an axis of the sweep; "
                               "set it in one place")
    if kind == "probe":
        _check_probe_tasks(overrides, arms)
    return Spec(
        name=files.simple_name(raw.get("name", "sweep"), "sweep spec key 'name' (the sweep folder's name)"),
        datasets=datasets, arms=arms,
        hparam_draws=_count(raw, "hparam_draws"), seeds=sorted(set(seed_list)),
        overrides=overrides, discovery=methods,
        discovery_draws=_count(disc, "hparam_draws", "discovery."), discovery_seeds=discovery_seeds,
        discovery_overrides=_overrides(disc.get("overrides"), "discovery.overrides"),
        launcher=launcher, raw=raw, kind=kind, axes=list(dict.fromkeys(k for arm in arms for k in arm.point)),
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


def _axes(raw: dict, where: str) -> dict[str, list]:
    """The axes of a spec or an arm item: ``axes`` (config key → list of values) and the keys
    that spell an axis (``groups: [...]``), each a non-empty list."""
    given = raw.get("axes") or {}
    if not isinstance(given, dict):
        raise HarnessError(f"sweep spec: {where}axes must be a mapping of config keys to lists of values, "
                           f"e.g. axes: {{backbone.options.last_width: [16, 32]}}, got {shown(given)}")
    axes = {key: [_str(v, key) for v in _list(raw, key, None)] for key in LEGACY_AXES if key in raw}
    for key, values in given.items():
        if not isinstance(key, str) or not key:
            raise HarnessError(f"sweep spec: {where}axes keys are config keys such as backbone.options.width, "
                               f"got {shown(key)}")
        if key in axes:
            raise HarnessError(f"sweep spec: {where}{key} is given twice, as a key and in axes; keep one")
        if any(key == r or key.startswith(r + ".") for r in RESERVED):
            raise HarnessError(f"sweep spec: {where}axes sets {key!r}, which the sweep sets itself; use the spec's "
                               "datasets, algorithms, hparam_draws and seeds keys")
        axes[key] = _list(given, key, None)
    return axes


def _arms(item: Any, axes: dict[str, list]) -> list[Arm]:
    if isinstance(item, str):
        item = {"name": item}
    if not (isinstance(item, dict) and isinstance(item.get("name"), str) and set(item) <= set(ARM_KEYS)):
        raise HarnessError("sweep spec: an algorithm is a name or {name: ..., axes: {...}, groups: [...], "
                           f"overrides: {{...}}}}, got {shown(item)}")
    own = {**axes, **_axes(item, f"{item['name']}.")}
    overrides = _overrides(item.get("overrides"), f"overrides of {item['name']}")
    return [Arm(item["name"], dict(zip(own, values)), overrides) for values in itertools.product(*own.values())]


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
                               "datasets, algorithms, axes, hparam_draws and seeds keys")
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

def resolve_trial(kind: str, sweep_dir: Path, dataset: dict, algorithm: str, draw: int, seed: int,
                  *overrides: dict[str, Any], point: dict[str, Any] | None = None, arm: str = "") -> Trial:
    """The trial at one point of the sweep's axes: overrides (later layers win), then the axes,
    then what the trial kind sets; resolved. Placed in ``sweep_dir/<its hash>`` unless what it
    needs completes its config later (then its ``run_dir`` is None)."""
    raw: dict[str, Any] = {}
    for layer in (*overrides, point or {}, dict(TRIAL_KINDS.get(kind).obj.sets)):
        for key, value in layer.items():
            configs.set_dotted(raw, key, copy.deepcopy(value))
    raw.update({"dataset": copy.deepcopy(dataset), "seed": seed, "arm": arm, "output_dir": str(sweep_dir)})
    raw.setdefault("algorithm", {}).update({"name": algorithm, "hparams_seed": draw})
    cfg = configs.resolve(raw)
    trial = Trial(kind, cfg, dict(point or {}))
    if not any(need.complete is not None for need in needs_of(trial)):
        cfg["run_dir"] = str(sweep_dir / configs.config_hash(cfg))
    return trial


class Plan:
    """The trials of a spec in a sweep folder (an absolute path: SLURM jobs and worker
    processes may run elsewhere): the discovery block's trials, and the spec's own trials with
    the upstream trials they need (:class:`harness.sweeps.planner.Planner`)."""

    def __init__(self, spec: Spec, sweep_dir: str | Path):
        self.spec, self.dir = spec, Path(sweep_dir).resolve()
        self.discovery = unique([
            resolve_trial("discovery", self.dir, d, method, draw, seed,
                          spec.overrides, spec.discovery_overrides, own.overrides)
            for d in spec.datasets for method, own in spec.discovery.items()
            for draw in range(own.hparam_draws or spec.discovery_draws)
            for seed in self._discovery_seeds()
        ])
        # Every config is resolved now, so bad input stops before any run.
        self.roots = [resolve_trial(spec.kind, self.dir, d, arm.algorithm, draw, seed, spec.overrides,
                                    arm.overrides, point=arm.point, arm=arm.label)
                      for d in spec.datasets for arm in spec.arms for seed in spec.seeds
                      for draw in range(spec.hparam_draws)]
        self.planner = Planner(self.roots, self.discovery, self._upstream_seed)
        self.planner.check()

    def _discovery_seeds(self) -> list[int]:
        return self.spec.seeds if self.spec.discovery_seeds == "paired" else [0]

    def _upstream_seed(self, seed: int) -> int:
        return seed if self.spec.discovery_seeds == "paired" else 0

    def trials(self) -> tuple[list[Trial], list[Waiting]]:
        """Every trial that can be planned now (upstream ones included), and those that wait."""
        return self.planner.plan()

    def downstream(self) -> tuple[list[Trial], list[str]]:
        """The trials planned beyond the discovery block's, and what cannot be planned yet (a
        discovery it depends on is not done), as messages."""
        trials, waiting = self.planner.plan()
        discovery = {t.hash for t in self.discovery}
        return [t for t in trials if t.hash not in discovery], [w.message() for w in waiting]


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

def save_spec(spec: Spec, sweep_dir: Path) -> None:
    """The spec beside its trials, so that ``status`` and ``collect`` know what was planned. A
    relaunch with a grown spec (more seeds, draws, algorithms) replaces it; trials are reused by hash."""
    files.write_text(Path(sweep_dir) / SPEC_FILE, yaml.safe_dump(spec.raw, sort_keys=False))


def run_sweep(spec: Spec, sweep_dir: str | Path, launcher: Any) -> Report:
    """Every trial of the spec, in waves: those whose upstream trials are done first (the
    discoveries, the pretraining runs), then those planned from them. Done trials are skipped,
    never resubmitted."""
    plan = Plan(spec, sweep_dir)
    save_spec(spec, plan.dir)
    return run_plan(plan.planner, launcher)


def load_plan(sweep_dir: str | Path) -> Plan:
    path = Path(sweep_dir) / SPEC_FILE
    if not path.exists():
        raise HarnessError(f"{str(sweep_dir)!r} is not a sweep folder (no {SPEC_FILE}); "
                           "pass the folder `harness sweep SPEC.yaml` ran into")
    return Plan(parse_spec(files.read_yaml_mapping(path, "sweep spec")), sweep_dir)


def status(plan: Plan) -> tuple[list[tuple[Trial, str]], list[tuple[Waiting, str]], dict[str, Trial]]:
    """Every planned trial with its state (one of planner.PLAN_STATES), the trials that wait
    (``not started``, or ``blocked`` by a failed upstream) and the planned trials by hash."""
    return plan_states(plan.planner)
