"""Model selection: which evaluated checkpoint (and, over a sweep, which hparam draw) a result
is read from, by a protocol's :class:`~harness.protocols.base.Rule`.

A rule optimises one metric of one split over checkpoints; ties go to the earliest checkpoint
(a ``last_checkpoint`` rule takes each run's last one and optimises over hparam draws only).
``select`` works on one run's result rows, ``choose`` on a sweep's frame.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from harness.protocols.base import Rule

if TYPE_CHECKING:
    import pandas as pd


def select(rows: list[dict], rule: Rule) -> dict | None:
    """The result row (one per evaluation) that ``rule`` picks, or None if none has the metric."""
    scored = [(r["step"] if rule.last_checkpoint else rule.key(r["metrics"][rule.split][rule.metric]), -r["step"], i)
              for i, r in enumerate(rows) if r["metrics"].get(rule.split, {}).get(rule.metric) is not None]
    return rows[max(scored)[2]] if scored else None


def choose(frame: pd.DataFrame, rule: Rule, keys: Sequence[str]) -> pd.DataFrame:
    """The rows (one per seed) a rule picks from a sweep's frame (one row per run × checkpoint,
    columns ``run``, ``keys``, ``hparams_seed``, ``seed``, ``step`` and ``<split>.<metric>``).

    1. Checkpoint: in each run (and combination of ``keys``: a transfer run has rows per task
       and layer, so with ``layer`` not among the keys this picks the layer), the one the rule
       prefers (ties: the earliest); with ``rule.last_checkpoint``, the last one.
    2. Hparam draw: for each combination of ``keys`` (an entrant on a dataset), the draw whose
       selected checkpoints have the best metric averaged over its seeds (ties: the lowest draw).
       DomainBed instead picks a draw separately for every trial seed (its draws differ per
       seed); one draw for all seeds reports one configuration, and the spread over seeds is
       then seed noise alone, not also the luck of a per-seed maximum.
    Runs where the metric is missing (e.g. ``val-wga-inferred`` on annotated groups) take no
    part; a combination none of whose runs has it is absent from the result.
    """
    column, ascending = rule.column, not rule.higher_is_better
    scored = frame[frame[column].notna()] if column in frame else frame.iloc[0:0]
    keys = list(keys)
    by, up = (["step"], [False]) if rule.last_checkpoint else ([column, "step"], [ascending, True])
    best = scored.sort_values(by, ascending=up, kind="stable").groupby([*keys, "run"], sort=False, dropna=False).head(1)
    means = best.groupby([*keys, "hparams_seed"], as_index=False, dropna=False)[column].mean()
    draws = (means.sort_values([column, "hparams_seed"], ascending=[ascending, True], kind="stable")
             .groupby(keys, sort=False, dropna=False).head(1)[[*keys, "hparams_seed"]])
    chosen = best.merge(draws, on=[*keys, "hparams_seed"])
    return chosen.assign(rule=rule.name).sort_values([*keys, "seed"], kind="stable").reset_index(drop=True)
