"""Declared options: what each option of a registered object accepts (after scikit-learn's
parameter constraints), so that one checker validates them all and ``harness list`` shows them.

    Option(60, int, low=1, help="minutes per job")          # an integer >= 1, default 60
    Option(None, str, nullable=True, help="partition")      # a name, or null for the default
    Option(4.0, float, low=0, low_open=True)                 # a number > 0
    Option("fast", str, choices=("fast", "exact"))

Numbers must be finite: no range a run can use contains nan or inf.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.core.errors import HarnessError, shown, unknown

_NOUNS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a non-empty string"}


@dataclass(frozen=True)
class Option:
    """One option: its default, type (bool, int, float or str), an optional range or set of
    choices, whether null is accepted (meaning "the system's own default"), and a help line."""

    default: Any
    type: type
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    nullable: bool = False

    def accepts(self) -> str:
        """What the option accepts, in words: ``an integer >= 1``, ``one of a, b``, ..."""
        if self.choices is not None:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        else:
            text = _NOUNS[self.type]
            if self.low is not None:
                text += f" {'>' if self.low_open else '>='} {self.low}"
            if self.high is not None:
                text += f"{' and' if self.low is not None else ''} {'<' if self.high_open else '<='} {self.high}"
        return text + (" or null" if self.nullable else "")

    def check(self, where: str, value: Any) -> Any:
        """``value`` if accepted (ints pass for floats, as floats), else a HarnessError naming
        ``where`` and what is accepted."""
        if value is None and self.nullable:
            return None
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
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
        if not ok:
            raise HarnessError(f"{where} must be {self.accepts()}, got {shown(value)}")
        return value


def check_options(what: str, given: Any, declared: dict[str, Option]) -> dict[str, Any]:
    """Every declared option, from ``given`` where set and from its default otherwise. ``what``
    names the owner in messages (``slurm launcher option``)."""
    if not isinstance(given, dict):
        raise HarnessError(f"{what}s must be a mapping of option names to values, got {shown(given)}")
    for key in given:
        if key not in declared:
            raise unknown(what, key, list(declared))
    return {key: option.check(f"{what} {key!r}", given[key]) if key in given else option.default
            for key, option in declared.items()}
