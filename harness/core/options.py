"""Declared options: what each option accepts (after scikit-learn's parameter constraints), so
that one checker validates them all, every message names the key and what it accepts, and
``harness list`` shows them.

    Option(60, int, "minutes per job", low=1)               # an integer >= 1, default 60
    Option(None, str, "partition", nullable=True)           # a non-empty string or null
    Option(4.0, float, low=0, low_open=True)                # a finite number > 0
    Option("fast", str, choices=("fast", "exact"))          # one of fast, exact
    Option("auto", ("auto", Option(type=int, low=1)))       # auto or an integer >= 1 (a union)
    Option([1.0], list, items=Option(type=float, low=0, low_open=True), non_empty=True)
                                                            # a non-empty list of finite numbers > 0
    Option(None, Path, nullable=True)                       # a path or null
    Option(type=dict, fields={"name": Option(type=str, required=True)})   # a mapping with keys name

The type is bool, int, float, str, Path, list (a list or tuple, each item checked by ``items``),
dict (a mapping, its keys declared by ``fields`` and checked by :func:`check_options`) or a
tuple of alternatives: options, or literal values accepted as they are (a union). Numbers must be
finite: no range a run can use contains nan or inf.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError, shown, unknown

# What a value of each type is called: (singular, plural).
_NOUNS: dict[Any, tuple[str, str]] = {
    bool: ("true or false", "true or false values"), int: ("an integer", "integers"),
    float: ("a finite number", "finite numbers"), str: ("a non-empty string", "non-empty strings"),
    Path: ("a path", "paths"), list: ("a list", "lists"), dict: ("a mapping", "mappings")}


@dataclass(frozen=True)
class Option:
    """One option: its default, its type (or a union of alternatives), an optional range or set
    of choices, whether null is accepted (meaning "the system's own default"), and a help line.
    ``items`` checks each item of a list, ``fields`` the keys of a mapping; ``required``: a
    mapping checked by :func:`check_options` must set it; ``noun`` names a value in messages
    instead of its type (``split name`` → "a list of split names")."""

    default: Any = None
    type: Any = str
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    items: Option | None = None
    non_empty: bool = False
    fields: dict[str, Option] | None = None
    required: bool = False
    noun: str = ""

    def accepts(self, plural: bool = False) -> str:
        """What the option accepts, in words: ``an integer >= 1``, ``one of a, b``, ``auto or a
        list of split names``; ``plural`` words it as the items of a list (``integers >= 1``)."""
        if isinstance(self.type, tuple):
            text = " or ".join(m.accepts(plural) if isinstance(m, Option) else _literal(m) for m in self.type)
        elif self.choices is not None:
            listed = ", ".join(_literal(c) for c in self.choices)
            text = listed if len(self.choices) == 1 else ("values among " if plural else "one of ") + listed
        else:
            text = self._noun(plural)
            if self.type is list and self.non_empty:
                text = "non-empty lists" if plural else "a non-empty list"
            if self.type is list and self.items is not None:
                text += " of " + self.items.accepts(plural=True)
            if self.type is dict and self.fields:
                text += " with keys " + ", ".join(self.fields)
            if self.low is not None:
                text += f" {'>' if self.low_open else '>='} {self.low}"
            if self.high is not None:
                text += f"{' and' if self.low is not None else ''} {'<' if self.high_open else '<='} {self.high}"
        return text + (" or null" if self.nullable else "")

    def _noun(self, plural: bool) -> str:
        if self.noun:
            return self.noun + "s" if plural else ("an " if self.noun[0] in "aeiou" else "a ") + self.noun
        return _NOUNS[self.type][plural]

    def check(self, where: str, value: Any) -> Any:
        """``value`` if accepted (ints pass for floats, as floats; a list keeps its own type, its
        items checked; a mapping with ``fields`` gets their defaults), else a HarnessError naming
        ``where`` and what is accepted."""
        if value is None and self.nullable:
            return None
        if isinstance(self.type, tuple):
            for member in self.type:
                if not isinstance(member, Option):
                    if type(value) is type(member) and value == member:
                        return value
                    continue
                try:
                    return member.check(where, value)
                except HarnessError:
                    continue
            raise self.refused(where, value)
        if self.type is list:
            if not isinstance(value, (list, tuple)) or (self.non_empty and not value):
                raise self.refused(where, value)
            if self.items is None:
                return value
            return type(value)(self.items.check(f"each item of {where}", v) for v in value)
        if self.type is dict:
            if not isinstance(value, dict):
                raise self.refused(where, value)
            return value if self.fields is None else check_options("key", value, self.fields, prefix=f"{where}.")
        given = value
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise self.refused(where, given) from None
        if not self._fits(value):
            raise self.refused(where, given)
        return value

    def _fits(self, value: Any) -> bool:
        if self.type is Path:
            return isinstance(value, (str, os.PathLike)) and str(value) != ""
        ok = isinstance(value, self.type) and (self.type is bool or not isinstance(value, bool))
        if ok and self.type is str:
            ok = bool(value)
        if ok and self.type is float:
            ok = math.isfinite(value)
        if ok and self.choices is not None:
            ok = value in self.choices
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        return ok

    def refused(self, where: str, value: Any) -> HarnessError:
        """The one-line message for a value this option does not accept."""
        return HarnessError(f"{where} must be {self.accepts()}, got {shown(value)}")


def _literal(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def check_options(what: str, given: Any, declared: dict[str, Option], prefix: str | None = None,
                  suffix: str = "") -> dict[str, Any]:
    """Every declared option, from ``given`` where set and from (a copy of) its default
    otherwise. ``what`` names a key in messages: ``slurm launcher option 'time_min'``; with a
    ``prefix`` keys are named as dotted paths instead (``features.batch_size``), and ``suffix``
    ends the names of the values checked (``required_seeds of board b.yaml``)."""
    def name(key: str) -> str:
        return f"{what} {key!r}" if prefix is None else f"{prefix}{key}{suffix}"

    if not isinstance(given, dict):
        raise HarnessError(f"{what}s must be a mapping of option names to values, got {shown(given)}")
    for key in given:
        if key not in declared:
            raise unknown(what, key if prefix is None else prefix + str(key),
                          [k if prefix is None else prefix + k for k in declared])
    for key, option in declared.items():
        if option.required and key not in given:
            raise HarnessError(f"{name(key)} is required: {option.help or option.accepts()}")
    return {key: option.check(name(key), given[key]) if key in given else copy.deepcopy(option.default)
            for key, option in declared.items()}
