"""Registries: the catalogue of algorithms, datasets and backbones.

A class (or factory) is registered under a name with a hyperparameter space. Each
hyperparameter has a default and a random distribution; a random draw seeds every
hyperparameter from (draw seed, its own name), so adding a hyperparameter never shifts
the values drawn for the others (DomainBed's habit).

Third-party packages register through entry points in the group ``shift_harness``:
``[project.entry-points.shift_harness] mything = "mypkg.module"``; importing the module
runs its ``@register`` decorators.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import math
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

import numpy as np

from harness.core.errors import HarnessError, unknown


@dataclass(frozen=True)
class Hparam:
    """One hyperparameter: its default and how to draw it at random."""

    default: Any
    draw: Callable[[np.random.RandomState], Any]
    help: str = ""


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


def builder_options(obj: Any, skip: tuple[str, ...] = ("input_shape",)) -> dict[str, inspect.Parameter]:
    """The keyword parameters of a registered builder: the options a config may set."""
    return {n: p for n, p in inspect.signature(obj).parameters.items()
            if n not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


class Registry:
    """Names → registered objects, with their hyperparameter spaces."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, hparams: dict[str, Hparam] | None = None,
                 description: str | None = None) -> Callable[[Any], Any]:
        """Decorator. The description defaults to the first line of the docstring. A class may
        also carry an ``hparams`` dict (merged along its bases); explicit ones win."""

        def decorate(obj: Any) -> Any:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            space = dict(_class_hparams(obj))
            space.update(hparams or {})
            summary = description or next(iter((obj.__doc__ or "").strip().splitlines()), "")
            self._entries[name] = Entry(name, obj, summary, space)
            return obj

        return decorate

    def get(self, name: str) -> Entry:
        load_plugins()
        if name not in self._entries:
            raise unknown(self.kind[:-1] if self.kind.endswith("s") else self.kind, name, self.names())
        return self._entries[name]

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]


def _class_hparams(obj: Any) -> dict[str, Hparam]:
    space: dict[str, Hparam] = {}
    for klass in reversed(getattr(obj, "__mro__", (obj,))):
        space.update(getattr(klass, "hparams", None) or {})
    return {k: v for k, v in space.items() if isinstance(v, Hparam)}


ALGORITHMS = Registry("algorithms")
DATASETS = Registry("datasets")
BACKBONES = Registry("backbones")
REGISTRIES = {r.kind: r for r in (ALGORITHMS, DATASETS, BACKBONES)}

_BUILTIN_MODULES = ("harness.models.backbones", "harness.algorithms", "harness.datasets")
_loaded = False


def load_plugins() -> None:
    """Import the built-in modules and every ``shift_harness`` entry point, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in entry_points(group="shift_harness"):
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must not take the harness down
            raise HarnessError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
