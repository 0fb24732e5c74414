"""Tie groups: which neighbouring ranks of a board the data cannot separate.

A board ranks its entries by the mean of one metric over seeds. Two entries differ when a
two-sided test at 5% says so; each entry's rank is the range of places it could take among those
it does not differ from ("1–3": two entries may rank above it, or none). The test reads only what every entry holds, each entry's mean, standard error and seed
count: Welch's t-test on the per-seed numbers (their mean and standard error are sufficient for
it), which makes no assumption that two entries' seeds share data, so it is the conservative
choice where they do. It is deterministic (no resampling). Entries without a number rank last,
each on its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

LEVEL = 0.05
METHOD = ("a range (e.g. 1–3) where the data cannot separate an entry from its neighbours: from 1 + the entries "
          "above it that Welch's two-sided t-test on the per-seed numbers of the ranking metric (5% level) "
          "separates from it, to the count less those below it so separated")


@dataclass(frozen=True)
class Score:
    """One entry's ranking metric: mean, standard error of the mean, number of seeds."""

    mean: float | None
    stderr: float | None
    n: int


def differ(a: Score, b: Score, level: float = LEVEL) -> bool:
    """Whether Welch's test separates two entries' means at ``level`` (two-sided)."""
    if a.mean is None or b.mean is None:
        return a.mean is not b.mean
    if a.mean == b.mean:
        return False
    va, vb = (a.stderr or 0.0) ** 2, (b.stderr or 0.0) ** 2
    if va + vb == 0:
        return True  # no spread at all: any difference is real
    t = abs(a.mean - b.mean) / math.sqrt(va + vb)
    dfs = [(v ** 2 / (n - 1)) for v, n in ((va, a.n), (vb, b.n)) if v > 0 and n > 1]
    df = (va + vb) ** 2 / sum(dfs) if dfs else 1.0
    return bool(2 * stats.t.sf(t, df) < level)


def rank_labels(scores: list[Score], level: float = LEVEL) -> list[str]:
    """For scores sorted best first: each one's rank range ``a–b``, ``a`` = 1 + the entries the
    test puts above it, ``b`` = the count less the entries it puts below it (one number where
    they meet). Ranges, unlike chains of untied neighbours, never join two entries that differ."""
    n = len(scores)
    labels = []
    for i, score in enumerate(scores):
        above = sum(differ(other, score, level) for other in scores[:i])
        below = sum(differ(score, other, level) for other in scores[i + 1:])
        low, high = 1 + above, n - below
        labels.append(str(low) if low == high else f"{low}–{high}")
    return labels
