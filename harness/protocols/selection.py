"""Model-selection rules: which evaluated checkpoint (and, over a sweep, which hparam draw) a
result is read from.

Each rule maximises one validation (or, for the oracle, test) metric over checkpoints; ties go to
the earliest checkpoint. ``select`` works on one run's result rows, ``choose`` on a sweep's frame.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness.core.errors import unknown

if TYPE_CHECKING:
    import pandas as pd

RULES: dict[str, tuple[str, str, str]] = {
    # name: (split, metric, what it needs)
    "oracle": ("test", "worst_group_acc", "test annotations (an upper bound, not a result)"),
    "val-wga": ("val", "worst_group_acc", "annotated validation groups"),
    "val-wga-inferred": ("val", "source_worst_group_acc", "discovered validation groups"),
    "val-worst-class": ("val", "worst_class_acc", "validation labels only"),
    "val-avg": ("val", "avg_acc", "validation labels only"),
}


def rule_key(rule: str) -> tuple[str, str]:
    if rule not in RULES:
        raise unknown("selection rule", rule, list(RULES))
    split, metric, _ = RULES[rule]
    return split, metric


def select(rows: list[dict], rule: str) -> dict | None:
    """The result row (one per evaluation) that ``rule`` picks, or None if none has the metric."""
    split, metric = rule_key(rule)
    scored = [(r["metrics"][split].get(metric), -r["step"], i) for i, r in enumerate(rows)
              if r["metrics"].get(split, {}).get(metric) is not None]
    return rows[max(scored)[2]] if scored else None


# Per (algorithm, dataset, group source): one hparam draw is chosen for all seeds.
SWEEP_KEYS = ("algorithm", "dataset", "groups")


def choose(frame: pd.DataFrame, rule: str) -> pd.DataFrame:
    """The rows (one per seed) a rule picks from a sweep's frame (one row per run × checkpoint,
    columns ``run``, SWEEP_KEYS, ``hparams_seed``, ``seed``, ``step`` and ``<split>.<metric>``).

    1. Checkpoint: in each run, the one maximising the rule's metric (ties: the earliest).
    2. Hparam draw: for each (algorithm, dataset, group source), the draw whose selected
       checkpoints have the highest metric averaged over its seeds (ties: the lowest draw).
       DomainBed instead picks a draw separately for every trial seed (its draws differ per
       seed); one draw for all seeds reports one configuration, and the spread over seeds is
       then seed noise alone, not also the luck of a per-seed maximum.
    Runs where the metric is missing (e.g. ``val-wga-inferred`` on annotated groups) take no
    part; a combination none of whose runs has it is absent from the result.
    """
    split, metric = rule_key(rule)
    column = f"{split}.{metric}"
    scored = frame[frame[column].notna()] if column in frame else frame.iloc[0:0]
    best = (scored.sort_values([column, "step"], ascending=[False, True], kind="stable")
            .groupby("run", sort=False).head(1))
    keys = list(SWEEP_KEYS)
    means = best.groupby([*keys, "hparams_seed"], as_index=False)[column].mean()
    draws = (means.sort_values([column, "hparams_seed"], ascending=[False, True], kind="stable")
             .groupby(keys, sort=False).head(1)[[*keys, "hparams_seed"]])
    chosen = best.merge(draws, on=[*keys, "hparams_seed"])
    return chosen.assign(rule=rule).sort_values([*keys, "seed"], kind="stable").reset_index(drop=True)
