"""Tie groups: which neighbouring ranks of a board the data cannot separate.

A board ranks its entries by the mean of one metric over seeds. Two entries differ when a
two-sided test at 5% says so; each entry's rank is the range of places it could take among those
it does not differ from ("1–3": two entries may rank above it, or none). Entries without a
number rank last, each on its own.

Two tests. Where both entries ship per-example predictions (compact predictions on the board's
published examples), a **paired bootstrap**: each resample draws the test examples with
replacement, the same draw for every entry (the pair shares its examples, so what both get right
or wrong cancels), and the seeds with replacement, the same draw for entries with the same seeds
(a seed's run of one entry is paired with that seed's run of the other), and computes the metric
from the per-example correctness; two entries differ when the middle 95% of their resampled
differences excludes zero. It is seeded (``SEED``), so a table renders the same every time.
Where either entry has no per-example predictions (older entries), Welch's t-test on the
per-seed numbers, which needs only each entry's mean, standard error and seed count (they are
sufficient for it) and assumes nothing shared, so it is the conservative choice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

LEVEL = 0.05
METHOD = ("a range (e.g. 1–3) where the data cannot separate an entry from its neighbours: from 1 + the entries "
          "above it that Welch's two-sided t-test on the per-seed numbers of the ranking metric (5% level) "
          "separates from it, to the count less those below it so separated")
PAIRED_METHOD = ("a range (e.g. 1–3) where the data cannot separate an entry from its neighbours: from 1 + the entries "
                 "above it that a paired bootstrap of the ranking metric separates from it, to the count less those "
                 "below it so separated (2,000 resamples, seeded, of the test examples, shared by both entries, and "
                 "of the seeds, paired by seed; separated when the middle 95% of the differences excludes 0)")
FALLBACK = ("; an entry marked † ships no per-example predictions, and a pair with one is tested by Welch's "
            "two-sided t-test on the per-seed numbers (5% level)")
RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Score:
    """One entry's ranking metric: mean, standard error of the mean, number of seeds."""

    mean: float | None
    stderr: float | None
    n: int


@dataclass(frozen=True)
class Welch:
    """Welch's two-sided t-test of ``a.mean - b.mean`` from each side's mean, standard error and
    seed count: the difference, its standard error, the Welch–Satterthwaite degrees of freedom and
    the p-value."""

    difference: float
    stderr: float
    df: float
    p: float

    def detectable(self, power: float = 0.8, level: float = LEVEL) -> float:
        """The smallest true difference this test would find at ``level`` with probability
        ``power``, at this standard error: (t_{1-level/2} + t_{power}) × s.e., both at ``df``."""
        return float((stats.t.ppf(1 - level / 2, self.df) + stats.t.ppf(power, self.df)) * self.stderr)


def welch(a: Score, b: Score) -> Welch:
    """Welch's test of two scores with numbers (``mean`` not None)."""
    va, vb = (a.stderr or 0.0) ** 2, (b.stderr or 0.0) ** 2
    difference = a.mean - b.mean
    if va + vb == 0:  # no spread at all: any difference is real
        return Welch(difference, 0.0, math.inf, 1.0 if difference == 0 else 0.0)
    dfs = [(v ** 2 / (n - 1)) for v, n in ((va, a.n), (vb, b.n)) if v > 0 and n > 1]
    df = (va + vb) ** 2 / sum(dfs) if dfs else 1.0
    se = math.sqrt(va + vb)
    return Welch(difference, se, df, float(2 * stats.t.sf(abs(difference) / se, df)))


def differ(a: Score, b: Score, level: float = LEVEL) -> bool:
    """Whether Welch's test separates two entries' means at ``level`` (two-sided)."""
    if a.mean is None or b.mean is None:
        return a.mean is not b.mean
    return welch(a, b).p < level


def rank_labels(scores: list[Score], level: float = LEVEL) -> list[str]:
    """Rank ranges of scores sorted best first, by Welch's test (:func:`ranges`)."""
    return ranges(len(scores), lambda i, j: differ(scores[i], scores[j], level))


def ranges(n: int, differs: Callable[[int, int], bool]) -> list[str]:
    """For n entries sorted best first, ``differs(i, j)`` (i above j) the test: each one's rank
    range ``a–b``, ``a`` = 1 + the entries the test puts above it, ``b`` = the count less the
    entries it puts below it (one number where they meet). Ranges, unlike chains of untied
    neighbours, never join two entries that differ."""
    labels = []
    for i in range(n):
        above = sum(differs(j, i) for j in range(i))
        below = sum(differs(i, j) for j in range(i + 1, n))
        low, high = 1 + above, n - below
        labels.append(str(low) if low == high else f"{low}–{high}")
    return labels


@dataclass(frozen=True)
class Examples:
    """One entry's per-example correctness on the ranking metric's split: a row per seed (its
    chosen run), a column per published example (the same columns for every entry of a board);
    ``groups``: each example's group where the metric is the worst group's accuracy (None: the
    plain accuracy; -1: in no group)."""

    seeds: tuple[int, ...]
    correct: np.ndarray
    groups: np.ndarray | None


def statistic(weights: np.ndarray, correct: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """The metric on each resample: ``weights`` (resamples × examples) how often each example
    was drawn, ``correct`` (examples) 0/1. Accuracy, or the worst accuracy over the groups a
    resample holds (an empty group is left out, as the protocol does)."""
    correct = correct.astype(np.float64)
    if groups is None:
        return weights @ correct / weights.sum(1)
    worst = np.full(len(weights), np.inf)
    for g in np.unique(groups[groups >= 0]):
        mask = groups == g
        n = weights[:, mask].sum(1)
        acc = np.divide(weights[:, mask] @ correct[mask], n, out=np.full(len(n), np.inf), where=n > 0)
        worst = np.minimum(worst, acc)
    return worst


def paired_draws(entries: list[Examples], resamples: int = RESAMPLES, seed: int = SEED) -> list[np.ndarray]:
    """Each entry's metric (mean over its resampled seeds) on every resample; the example draw is
    shared by all, the seed draw by entries with the same seeds. Entries must share columns."""
    if not entries:
        return []
    n = entries[0].correct.shape[1]
    if any(e.correct.shape[1] != n for e in entries):
        raise ValueError("paired entries must be scored on the same examples")
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=resamples).astype(np.float64)
    picks: dict[tuple[int, ...], np.ndarray] = {}
    out = []
    for entry in entries:
        k = len(entry.seeds)
        if entry.seeds not in picks:
            picks[entry.seeds] = np.random.default_rng([seed, k, *entry.seeds]).integers(0, k, size=(resamples, k))
        per_seed = np.stack([statistic(weights, row, entry.groups) for row in entry.correct])  # seeds × resamples
        out.append(per_seed[picks[entry.seeds], np.arange(resamples)[:, None]].mean(1))
    return out


def paired_differ(a: np.ndarray, b: np.ndarray, level: float = LEVEL) -> bool:
    """Whether the middle ``1 - level`` of the resampled differences ``a - b`` excludes zero."""
    diff = a - b
    return bool(max((diff > 0).mean(), (diff < 0).mean()) > 1 - level / 2)
