"""Model-selection rules: which evaluated checkpoint a result is read from.

Each rule maximises one validation (or, for the oracle, test) metric over checkpoints; ties go to
the earliest checkpoint.
"""
from __future__ import annotations

from harness.errors import unknown

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
