"""Run configuration: a YAML file plus dotted overrides, validated and resolved.

``resolve`` returns the complete config (every hyperparameter filled in); its identity part,
hashed, names the run folder. Anything unknown or of the wrong type is a :class:`HarnessError`
that names the key and the accepted values.

This module knows the basic run keys (``DEFAULTS``) only. A top-level section owned by a higher
layer (``features``: harness.runs.features; ``groups``: harness.protocols.worst_group) is a registration in ``SECTIONS`` that brings its
default, its check and the part of it that is hashed.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
from pathlib import Path
from typing import Any, Callable

import yaml

from harness.core import files
from harness.core.errors import HarnessError, shown, unknown
from harness.core.options import Option
from harness.core.registry import ALGORITHMS, BACKBONES, DATASETS, SECTIONS, Section, builder_options, draw_hparams

DEFAULTS: dict[str, Any] = {
    "dataset": {"name": "colored_digits", "options": {}},
    "algorithm": {"name": "erm", "hparams": {}, "hparams_seed": 0},
    "backbone": {"name": "auto", "options": {}},
    "arm": "",  # set by sweeps: the label of the arm's own overrides (see harness.sweeps.sweep.arm_label)
    "seed": 0,
    "steps": 1000,
    "eval_every": 100,
    "eval_batch_size": 2048,
    "device": "auto",
    "amp": False,
    "threads": "auto",  # torch's intra-op threads: auto (the free cores) or a number
    "eval_splits": "auto",      # the splits evaluated: auto (the algorithm's or the protocol's) or a list
    "eval_train_size": "auto",  # train examples evaluated (a seeded subset): auto (the protocol's), 0 = all
    "output_dir": "runs",
    "run_dir": None,
}
# Free-form mappings, checked against the registered object they configure.
FREE_FORM = {("dataset", "options"), ("algorithm", "hparams"), ("backbone", "options")}
# Keys that say where or how fast a run happens, or how a sweep names it, not what it computes: not hashed.
NOT_HASHED = ("device", "threads", "output_dir", "run_dir", "eval_batch_size", "arm")
# Keys hashed only when set: at auto, the runs written before they existed keep their hashes.
HASHED_UNLESS_AUTO = ("eval_splits", "eval_train_size")
# What the basic keys accept (their defaults are DEFAULTS'); a key not here is checked by the type of its default.
OPTIONS: dict[str, Option] = {
    "algorithm.hparams_seed": Option(type=int, low=0, help="0 means the defaults"),
    "seed": Option(type=int, low=0),
    "steps": Option(type=int, low=1),
    "eval_every": Option(type=int, low=1),
    "eval_batch_size": Option(type=int, low=1),
    "device": Option(type=str, help="auto, cpu, cuda, cuda:N or mps"),
    "amp": Option(type=bool),
    "threads": Option(type=("auto", Option(type=int, low=1)), help="auto: the free cores"),
    "eval_splits": Option(type=("auto", Option(type=list, items=Option(type=str, noun="split name"))),
                          help="auto: the algorithm's or the protocol's"),
    "eval_train_size": Option(type=("auto", Option(type=int, low=0)), help="auto: the protocol's; 0: all"),
    "output_dir": Option(type=Path),
    "run_dir": Option(type=Path, nullable=True),
}


def load(path: str | Path | None = None, overrides: list[str] = ()) -> dict[str, Any]:
    """Read a YAML file (optional) and apply ``key.sub=value`` overrides; then resolve."""
    raw = {} if path is None else files.read_yaml_mapping(path, "config file", " of keys to values")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise HarnessError(f"override {shown(item)} must look like key.sub=value")
        set_dotted(raw, key, parse_value(value))
    return resolve(raw)


def parse_value(text: str) -> Any:
    """YAML scalar, with numbers like 1e-3 read as floats (YAML 1.1 reads them as strings)."""
    try:  # the bounded reader of files: an alias bomb on a command line is refused as in a file
        value = files.parse_yaml(text, f"value {shown(text)}")
    except files.InvalidYaml:
        return text
    if isinstance(value, str):
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                pass
    return value


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise HarnessError(f"override {shown(key)}: {shown(part)} is not a mapping")
    node[parts[-1]] = value


def resolve(raw: dict[str, Any]) -> dict[str, Any]:
    """Merge onto the defaults, check every key and type, fill in the hyperparameters."""
    sections = _sections()
    for key in raw:
        if key not in DEFAULTS and key not in sections:
            raise unknown("config key", key, [*DEFAULTS, *sections])
    cfg = copy.deepcopy(DEFAULTS)
    _merge(cfg, {k: v for k, v in raw.items() if k in DEFAULTS}, DEFAULTS, prefix="")
    for key in ("output_dir", "run_dir"):  # not a file, no name too long, before anything is written
        if cfg[key] is not None:
            files.folder_arg(cfg[key], key)
    _check_names(cfg)
    dataset = DATASETS.get(cfg["dataset"]["name"])
    cfg["dataset"]["options"] = _check_options("dataset.options", cfg["dataset"]["options"], dataset.obj,
                                               {k: o.check for k, o in dataset.options.items()})
    algo = ALGORITHMS.get(cfg["algorithm"]["name"])
    hparams = draw_hparams(algo.hparams, cfg["algorithm"]["hparams_seed"])
    for name, value in cfg["algorithm"]["hparams"].items():
        if name not in hparams:
            raise unknown(f"hyperparameter of {algo.name} (algorithm.hparams.{name})", name, sorted(hparams))
        hparams[name] = _typed(f"algorithm.hparams.{name}", value, algo.hparams[name].default)
    cfg["algorithm"]["hparams"] = {name: algo.hparams[name].check(f"algorithm.hparams.{name}", value)
                                   for name, value in hparams.items()}
    backbone = cfg["backbone"]["name"]
    if backbone == "auto":  # the dataset picks it when built: check what every backbone declares
        for name, value in cfg["backbone"]["options"].items():
            for entry in BACKBONES.entries():
                if name in entry.hparams:
                    entry.hparams[name].check(f"backbone.options.{name}", value)
    else:
        entry, from_name = BACKBONES.family(backbone)
        cfg["backbone"]["options"] = _check_options("backbone.options", cfg["backbone"]["options"], entry.obj,
                                                    {k: hp.check for k, hp in entry.hparams.items()},
                                                    skip=("input_shape", *from_name))
    for name, section in sections.items():
        cfg[name] = section.check(copy.deepcopy(raw[name] if name in raw else section.default))
    return cfg


def _sections() -> dict[str, Section]:
    """The registered sections (listing them loads the plugins that register them)."""
    return {e.name: e.obj for e in SECTIONS.entries()}


def _merge(cfg: dict, raw: dict, schema: dict, prefix: str) -> None:
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if key not in schema:
            raise unknown("config key", path, [f"{prefix}{k}" for k in schema])
        default = schema[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise HarnessError(f"config key {shown(path)} must be a mapping, got {shown(value)}")
            if tuple(path.split(".")) in FREE_FORM:
                cfg[key] = {**cfg[key], **value}
            else:
                _merge(cfg[key], value, default, prefix=f"{path}.")
        elif path in OPTIONS:
            cfg[key] = OPTIONS[path].check(path, value)
        else:
            cfg[key] = _typed(path, value, default)


def _typed(path: str, value: Any, default: Any) -> Any:
    """``value`` checked against the type of ``default`` (ints pass for floats; None accepts any)."""
    if default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, (tuple, list))
        value = type(default)(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise HarnessError(f"config key {shown(path)} must be of type {type(default).__name__} "
                           f"(like {default!r}), got {shown(value)}")
    return value


def _check_names(cfg: dict) -> None:
    DATASETS.get(cfg["dataset"]["name"])
    ALGORITHMS.get(cfg["algorithm"]["name"])


def _check_options(path: str, options: dict, obj: Any, constraints: dict[str, Callable[[str, Any], Any]],
                   skip: tuple[str, ...] = ("input_shape",)) -> dict:
    """Options must be keyword parameters of the registered builder, typed like their defaults
    and within their declared ``constraints`` (name → check(where, value))."""
    params = builder_options(obj, skip)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(obj).parameters.values())
    checked = {}
    for name, value in options.items():
        if name not in params:
            if accepts_any:
                checked[name] = value
                continue
            raise unknown(f"option ({path}.{name})", name, sorted(params))
        default = params[name].default
        checked[name] = value if default is inspect.Parameter.empty else _typed(f"{path}.{name}", value, default)
        if name in constraints:
            checked[name] = constraints[name](f"{path}.{name}", checked[name])
        elif isinstance(checked[name], float) and not math.isfinite(checked[name]):
            raise HarnessError(f"config key {shown(f'{path}.{name}')} must be a finite number (like {default!r}), "
                               f"got {checked[name]}")
    return checked


def identity(cfg: dict[str, Any]) -> dict[str, Any]:
    """What the run computes: the config without where and how fast it runs; each section
    contributes its own identity (the worst-group protocol's ``groups``: a discovery's folder
    name, not its path)."""
    ident = {k: v for k, v in cfg.items() if k not in NOT_HASHED and not (k in HASHED_UNLESS_AUTO and v == "auto")}
    algorithm = ident.get("algorithm")
    if isinstance(algorithm, dict) and algorithm.get("name") in ALGORITHMS and isinstance(algorithm.get("hparams"), dict):
        declared = ALGORITHMS.get(algorithm["name"]).hparams
        ident["algorithm"] = {**algorithm, "hparams": {
            k: v for k, v in algorithm["hparams"].items()
            if not (k in declared and declared[k].legacy is not None and v == declared[k].legacy)}}
    for name, section in _sections().items():
        if name in ident and not section.hashed_when_default and ident[name] == section.default:
            del ident[name]
        elif name in ident:
            ident[name] = section.identity(ident[name])
    return ident


def config_hash(cfg: dict[str, Any]) -> str:
    """md5 of the sorted JSON of what the run computes; 12 hex digits name its folder."""
    text = json.dumps(identity(cfg), sort_keys=True, default=list)
    return hashlib.md5(text.encode()).hexdigest()[:12]


def check_read(kind: str, cfg: dict[str, Any]) -> None:
    """Refuse a section set away from its default that a run of ``kind`` does not read: it
    would change the run's hash (the same run in two folders) and do nothing."""
    for name, section in _sections().items():
        if section.read_by and kind not in section.read_by and cfg.get(name, section.default) != section.default:
            raise HarnessError(f"config section {name!r} is read only by {', '.join(section.read_by)} runs; a {kind} "
                               f"run ignores it: remove it, or run `harness {section.read_by[0]}`")


def run_dir(cfg: dict[str, Any]) -> Path:
    return Path(cfg["run_dir"]) if cfg["run_dir"] else Path(cfg["output_dir"]) / config_hash(cfg)


def dump(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(json.loads(json.dumps(cfg, default=list)), sort_keys=False)
