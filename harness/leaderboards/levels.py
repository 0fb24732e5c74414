"""Verification levels: how far a board entry's numbers have been checked, stored in the entry
(``verification: {level, date}``) and shown in every rendering of the board.

- ``recomputed``: every number computed from stored predictions by the board's protocol and
  selection rule (an entry made by ``submit`` from a sweep folder or from a bundle of our code);
- ``re-run``: besides, runs were trained again here with the same results: ``harness leaderboard
  rerun`` (one drawn seed, its predictions identical on CPU; the field then also says which run,
  device and threads), or a ``reproduce`` into a fresh sweep folder that got the numbers, chosen
  runs and checkpoints of the board folder's earlier entry (or the shipped one) of the same entrant;
- ``claimed``: predictions of code that is not ours (a foreign bundle): recomputed from them,
  but the training behind them is the submitter's word.

An entry written before levels existed was made by ``submit``/``reproduce`` from its runs, so
it reads as ``recomputed`` with no date.
"""
from __future__ import annotations

import datetime
from typing import Any

from harness.core.errors import HarnessError

LEVELS = ("re-run", "recomputed", "claimed")


def stamp(level: str) -> dict[str, str]:
    """The ``verification`` field of an entry checked to ``level`` today (UTC)."""
    if level not in LEVELS:
        raise HarnessError(f"verification level {level!r} is not one of: {', '.join(LEVELS)}")
    return {"level": level, "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat()}


def level_of(entry: dict[str, Any]) -> tuple[str, str]:
    """An entry's (level, date); an entry without the field: (``recomputed``, ``""``)."""
    field = entry.get("verification")
    if field is None:
        return "recomputed", ""
    if not isinstance(field, dict) or field.get("level") not in LEVELS or not isinstance(field.get("date", ""), str):
        raise HarnessError(f"verification of entry {entry.get('_path', '')} must be {{level: one of "
                           f"{', '.join(LEVELS)}, date: YYYY-MM-DD}}, got {field!r}")
    return field["level"], field.get("date", "")


def label(entry: dict[str, Any]) -> str:
    """``recomputed 2026-12-03`` (the date left out when unknown)."""
    level, date = level_of(entry)
    return f"{level} {date}".strip()
