"""Registries: the catalogue of algorithms, datasets, backbones, sweep launchers, trial kinds and
config sections. Every extension point is a registry: adding one is one registration.

A class (or factory) is registered under a name with a hyperparameter space. Each
hyperparameter has a default and a random distribution; a random draw seeds every
hyperparameter from (draw seed, its own name), so adding a hyperparameter never shifts
the values drawn for the others (DomainBed's habit).

Third-party packages register through entry points in the group ``shift_harness``:
``[project.entry-points.shift_harness] mything = "mypkg.module"``; importing the module
runs its ``@register`` decorators. The built-in plugins are the modules in ``_BUILTIN_MODULES``.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import math
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from harness.core.errors import HarnessError, unknown
from harness.core.options import Option
from harness.core.plugins import import_submodules

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, init=False)
class Hparam(Option):
    """One hyperparameter: an :class:`Option` of its default's type (a range, open or closed at
    either end, or choices; numbers must be finite), checked when a config is resolved, with a
    ``draw``: how to draw it at random. For a sequence default the constraints apply to each
    item. ``legacy``: for a hyperparameter added after runs were made without it, the value those
    runs used; a config with that value hashes as they did (so their folders and board entries
    stay planned), any other value is a new run."""

    draw: Callable[[np.random.RandomState], Any] | None = None
    legacy: Any = None

    def __init__(self, default: Any, draw: Callable[[np.random.RandomState], Any], help: str = "",
                 low: float | None = None, high: float | None = None, low_open: bool = False,
                 high_open: bool = False, choices: tuple[Any, ...] | None = None, legacy: Any = None):
        constraints = dict(low=low, high=high, low_open=low_open, high_open=high_open, choices=choices)
        if isinstance(default, (tuple, list)):
            item = Option(None, _kind(default[0] if default else 0), **constraints)
            super().__init__(default, list, help, items=item)
        else:
            super().__init__(default, _kind(default), help, **constraints)
        object.__setattr__(self, "draw", draw)
        object.__setattr__(self, "legacy", legacy)


def _kind(default: Any) -> type:
    kind = next(t for t in (bool, int, float, str, object) if isinstance(default, t))
    if kind is object:
        raise TypeError(f"hyperparameter default {default!r} is not a bool, int, float or str")
    return kind


def log_uniform(low: float, high: float) -> Callable[[np.random.RandomState], float]:
    """10**U(log10 low, log10 high), the usual draw for learning rates and weight decays."""
    return lambda rng: float(10 ** rng.uniform(math.log10(low), math.log10(high)))


def log_uniform_int(low: int, high: int) -> Callable[[np.random.RandomState], int]:
    """int(10**U(log10 low, log10 high)): a step count spread over orders of magnitude."""
    return lambda rng: int(10 ** rng.uniform(math.log10(low), math.log10(high)))


def uniform(low: float, high: float) -> Callable[[np.random.RandomState], float]:
    return lambda rng: float(rng.uniform(low, high))


def choice(*values: Any) -> Callable[[np.random.RandomState], Any]:
    return lambda rng: values[rng.randint(len(values))]


def fixed(value: Any) -> Callable[[np.random.RandomState], Any]:
    return lambda rng: value


def seed_hash(*parts: object) -> int:
    """A 31-bit seed derived from the parts, stable across processes and Python versions."""
    digest = hashlib.md5(repr(parts).encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def draw_hparams(space: dict[str, Hparam], draw: int) -> dict[str, Any]:
    """Draw 0 is the defaults; draw k > 0 draws every hyperparameter from its own seed."""
    if draw == 0:
        return {name: hp.default for name, hp in space.items()}
    return {name: hp.draw(np.random.RandomState(seed_hash(draw, name))) for name, hp in space.items()}


@dataclass
class Entry:
    name: str
    obj: Any
    description: str
    hparams: dict[str, Hparam] = field(default_factory=dict)
    options: dict[str, Option] = field(default_factory=dict)
    argument: tuple[str, type] | None = None  # a family written <name>:<argument> sets this option


def builder_options(obj: Any, skip: tuple[str, ...] = ("input_shape",)) -> dict[str, inspect.Parameter]:
    """The keyword parameters of a registered builder: the options a config may set."""
    return {n: p for n, p in inspect.signature(obj).parameters.items()
            if n not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


class Registry:
    """Names → registered objects, with their hyperparameter spaces."""

    def __init__(self, kind: str, noun: str | None = None):
        self.kind = kind  # plural, as `harness list` names it
        self.noun = noun or (kind[:-1] if kind.endswith("s") else kind)
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, hparams: dict[str, Hparam] | None = None, description: str | None = None,
                 options: dict[str, Option] | None = None,
                 argument: tuple[str, type] | None = None) -> Callable[[Any], Any]:
        """Decorator. The description defaults to the first line of the docstring. A class may
        also carry an ``hparams`` dict (merged along its bases); explicit ones win. ``options``
        declares the options the object accepts (a launcher's), checked by
        :func:`harness.core.options.check_options`. ``argument`` (option name, type) makes the
        entry a family written ``<name>:<argument>`` (``timm:resnet18``), see :meth:`family`."""

        def decorate(obj: Any) -> Any:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            space = dict(_class_hparams(obj))
            space.update(hparams or {})
            self._entries[name] = Entry(name, obj, description or _summary(obj), space, dict(options or {}),
                                        argument)
            return obj

        return decorate

    def get(self, name: str) -> Entry:
        load_plugins()
        if name not in self._entries:
            raise unknown(self.noun, name, self.names())
        return self._entries[name]

    def family(self, name: str) -> tuple[Entry, dict[str, Any]]:
        """The entry a name refers to and the option its suffix sets: ``timm:resnet18`` is the
        ``timm`` family with ``model="resnet18"``, ``text:30522`` is ``text`` with
        ``vocab_size=30522``; a plain name sets nothing."""
        family, colon, argument = name.partition(":")
        entry = self.get(family)
        if not colon and not (entry.argument and _required(entry.obj, entry.argument[0])):
            return entry, {}
        if entry.argument is None:
            families = [f"{e.name}:<{e.argument[0]}>" for e in self.entries() if e.argument]
            raise HarnessError(f"{self.noun} {family!r} is not a family written {family}:<...>; families: "
                               f"{', '.join(families)}")
        option, kind = entry.argument
        value: Any = argument
        if kind is int:
            value = int(argument) if argument.isdigit() else 0
        if not value:
            raise HarnessError(f"{self.noun} {name!r} needs its {option}: write {family}:<{option}>"
                               + (", a positive integer" if kind is int else ""))
        return entry, {option: value}

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]


def _summary(obj: Any) -> str:
    return next(iter((obj.__doc__ or "").strip().splitlines()), "")


def _required(obj: Any, option: str) -> bool:
    """Whether the builder ``obj`` has no default for ``option``."""
    parameter = inspect.signature(obj).parameters.get(option)
    return parameter is not None and parameter.default is parameter.empty


def _class_hparams(obj: Any) -> dict[str, Hparam]:
    space: dict[str, Hparam] = {}
    for klass in reversed(getattr(obj, "__mro__", (obj,))):
        space.update(getattr(klass, "hparams", None) or {})
    return {k: v for k, v in space.items() if isinstance(v, Hparam)}


@dataclass(frozen=True)
class Need:
    """Upstream trials a trial waits for, as its kind or a config section declares them.

    Either ``configs``: the resolved configs of trials of ``kind`` (a probe's pretraining run),
    each planned once by its own hash in ``output_dir/<hash>``; or ``match`` (dotted config key →
    value): every trial of ``kind`` the sweep itself plans with those values, of the dependent's
    seed (a sweep's ``discovery`` block says how seeds pair). With ``complete``, the dependent's
    config is only known once they are all done: ``complete(cfg, their run folders)`` returns it
    (the best of several discoveries named as its groups), and ``chosen(cfg, one run folder)``
    returns the config it gets if that one is chosen, so that every config a spec may lead to is
    known without running anything (a board checks an entry against them). ``label`` names them
    in messages ("2 xrm discovery run(s)"); ``unmet`` is the message when a sweep plans none to match."""

    kind: str
    label: str
    configs: tuple[dict[str, Any], ...] = ()
    match: dict[str, Any] | None = None
    complete: Callable[[dict[str, Any], list[Any]], dict[str, Any]] | None = None
    unmet: str = ""
    chosen: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None


def _no_needs(cfg: dict[str, Any]) -> list[Need]:
    return []


def _no_check(cfg: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class TrialKind:
    """What a sweep can run: ``run(resolved config, progress=...)`` trains (or resumes, or skips)
    the run in the config's run folder; the trial is done once every ``done_files`` exists there.
    ``needs(cfg)``: the upstream trials it waits for (:class:`Need`); ``sets``: dotted config
    values every trial of the kind has (a discovery uses no groups); ``check(cfg)``: a HarnessError
    for what ``run`` would refuse (an unknown layer, a batch larger than its split), raised before
    anything is written; a sweep calls it for every planned trial before it creates any folder."""

    run: Callable[..., Any]
    done_files: tuple[str, ...]
    needs: Callable[[dict[str, Any]], list[Need]] = _no_needs
    sets: tuple[tuple[str, Any], ...] = ()
    check: Callable[[dict[str, Any]], None] = _no_check


def _as_is(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Section:
    """A top-level run-config key owned by a module above ``harness.core``: ``check`` turns the
    user's value (or ``default`` when the config has none) into the resolved value, raising
    HarnessError on bad input; ``identity`` is the part of the resolved value that is hashed."""

    default: Any
    check: Callable[[Any], Any]
    identity: Callable[[Any], Any] = _as_is
    hashed_when_default: bool = True  # False: a config at the default hashes as if the section did not exist
    needs: Callable[[dict[str, Any]], list[Need]] = _no_needs  # upstream trials a config's value asks for
    read_by: tuple[str, ...] = ()  # the trial kinds that read it (empty: every kind)


ALGORITHMS = Registry("algorithms")
DATASETS = Registry("datasets")
BACKBONES = Registry("backbones")
LAUNCHERS = Registry("launchers")
TRIAL_KINDS = Registry("kinds", noun="trial kind")
SECTIONS = Registry("sections", noun="config section")
PROTOCOLS = Registry("protocols")
TASKS = Registry("tasks", noun="downstream task")
# What `harness list` shows.
REGISTRIES = {r.kind: r for r in (ALGORITHMS, DATASETS, BACKBONES, PROTOCOLS, LAUNCHERS, TRIAL_KINDS, TASKS)}


def trial_kind(name: str, done_files: Sequence[str], description: str | None = None,
               needs: Callable[[dict[str, Any]], list[Need]] | None = None,
               sets: dict[str, Any] | None = None,
               check: Callable[[dict[str, Any]], None] | None = None) -> Callable[[F], F]:
    """Decorator: register ``run(cfg, progress=...)`` as the trial kind ``name``, done once
    every one of ``done_files`` exists in the run folder; ``needs``, ``sets`` and ``check``: see
    :class:`TrialKind`."""

    def decorate(run: F) -> F:
        kind = TrialKind(run, tuple(done_files), needs or _no_needs, tuple((sets or {}).items()), check or _no_check)
        TRIAL_KINDS.register(name, description=description or _summary(run))(kind)
        return run

    return decorate


def config_section(name: str, default: Any, identity: Callable[[Any], Any] = _as_is,
                   hashed_when_default: bool = True,
                   needs: Callable[[dict[str, Any]], list[Need]] | None = None,
                   read_by: Sequence[str] = ()) -> Callable[[F], F]:
    """Decorator: register ``check`` as the validator of the top-level config key ``name``
    (see :class:`Section`). ``hashed_when_default=False`` keeps the hashes of configs that
    leave the section at its default (those written before it existed) unchanged. ``read_by``:
    the trial kinds that read the section; a run of another kind with it set is refused."""

    def decorate(check: F) -> F:
        section = Section(default, check, identity, hashed_when_default, needs or _no_needs, tuple(read_by))
        SECTIONS.register(name, description=_summary(check))(section)
        return check

    return decorate


# The built-in plugins: modules whose import registers algorithms, datasets, downstream tasks
# (harness.data.tasks), backbones, config sections (harness.runs.features, harness.runs.probe,
# harness.protocols.worst_group), protocols
# (harness.protocols), trial kinds (harness.runs.run, harness.runs.discovery, harness.runs.probe) and
# launchers (harness.sweeps.launchers).
_BUILTIN_MODULES = ("harness.models.backbones", "harness.protocols", "harness.algorithms", "harness.datasets",
                    "harness.data.tasks", "harness.runs.features",
                    "harness.runs.run", "harness.runs.discovery", "harness.runs.probe", "harness.runs.visualize",
                    "harness.sweeps.launchers")
_loaded = False
_loading = False
_failure: str | None = None  # why the registries are incomplete in this process


def load_plugins() -> None:
    """Import the built-in plugins and every ``shift_harness`` entry point, once. A plugin that
    fails to import is a HarnessError naming it, on this call and on every later one: the
    registries would be incomplete, and a catalogue silently missing entries is worse than none."""
    global _loaded, _loading, _failure
    if _failure is not None:
        raise HarnessError(_failure)
    if _loaded or _loading:  # _loading: a plugin looked something up while being imported
        return
    _loading = True
    try:
        for module in _BUILTIN_MODULES:
            _load(f"built-in plugin module {module!r}", lambda: _import_plugin(module))
        for ep in entry_points(group="shift_harness"):
            _load(f"plugin {ep.name!r} ({ep.value})", ep.load)
        _loaded = True
    finally:
        _loading = False


def _import_plugin(name: str) -> None:
    """Import a plugin module, or every module of a plugin package (so that a new algorithm,
    dataset or protocol is one new file). Only plugin loading does this: importing one module
    of a package (``harness.protocols.base``) imports that module alone."""
    module = importlib.import_module(name)
    if hasattr(module, "__path__"):
        import_submodules(name, module.__path__)


def _load(what: str, load: Callable[[], Any]) -> None:
    global _failure
    try:
        load()
    except Exception as exc:  # any failure: the plugin's registrations are missing or partial
        _failure = f"{what} failed to load ({type(exc).__name__}: {exc}); the registries are incomplete"
        raise HarnessError(_failure) from exc
