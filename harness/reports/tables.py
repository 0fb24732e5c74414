"""Tables of aggregated results as markdown, LaTeX or CSV.

Cells read ``mean ± standard error [95% bootstrap interval]``, each metric as its protocol
displays it (accuracies in percent). CSV keeps every number unrounded, one column per
statistic, for other tools.
"""
from __future__ import annotations

import math
from typing import Iterable

import pandas as pd
from tabulate import tabulate

from harness.core.errors import unknown
from harness.protocols.base import Display, Protocol

FORMATS = ("markdown", "latex", "csv")


def metric_label(scorer: Protocol, metric: str) -> str:
    """``test.worst_group_acc`` → ``test worst-group acc`` (the protocol's label, ``(raw)`` added
    for a metric not shown in percent)."""
    split, _, name = metric.partition(".")
    display = scorer.metrics[name]
    return f"{split} {display.label}" + ("" if display.percent else " (raw)")


def cell(row: pd.Series | dict, metric: str, display: Display, latex: bool = False) -> str:
    """``mean ± standard error [95% interval]`` as the protocol displays this metric."""
    mean = row[metric]
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    pm = r"$\pm$" if latex else "±"
    text = f"{display.format(mean)} {pm} {display.format(row[f'{metric}.se'])}"
    low, high = row[f"{metric}.ci_low"], row[f"{metric}.ci_high"]
    if not (math.isnan(low) or math.isnan(high)):
        text += f" [{display.format(low)}, {display.format(high)}]"
    return text


def render(headers: list[str], rows: list[list], fmt: str) -> str:
    """A markdown or LaTeX table (names escaped for LaTeX; ``$\\pm$`` cells left as they are)."""
    if fmt == "markdown":
        return tabulate(rows, headers=headers, tablefmt="github")
    if fmt == "latex":
        escape = lambda v: v if not isinstance(v, str) or "$" in v else v.replace("_", r"\_").replace("%", r"\%")  # noqa: E731
        return tabulate([[escape(v) for v in r] for r in rows], headers=[escape(h) for h in headers],
                        tablefmt="latex_raw")
    raise unknown("table format", fmt, FORMATS)


def summary_tables(summary: pd.DataFrame, scorer: Protocol, metrics: Iterable[str], fmt: str) -> str:
    """``harness collect``'s output for one protocol: one table per selection rule (CSV: one
    frame, all rules). An identity column that is empty for every row (e.g. ``arm`` when no arm
    has its own overrides) is left out."""
    metrics = list(metrics)
    if fmt not in FORMATS:
        raise unknown("table format", fmt, FORMATS)
    if fmt == "csv":
        return summary.to_csv(index=False)
    latex = fmt == "latex"
    shown = [c for c in (*scorer.columns, "arm") if summary[c].fillna("").astype(str).str.len().any()]
    parts = []
    for rule, part in summary.groupby("rule", sort=False):
        headers = ["algorithm", *shown, "dataset", "draw", "seeds", *(metric_label(scorer, m) for m in metrics)]
        rows = [[r["algorithm"], *(r[c] for c in shown), r["dataset"], r["hparams_seed"], r["n_seeds"],
                 *(cell(r, m, scorer.metrics[m.split(".", 1)[1]], latex) for m in metrics)]
                for _, r in part.iterrows()]
        percent = any(scorer.metrics[m.split(".", 1)[1]].percent for m in metrics)
        title = (f"selection: {rule} (mean ± s.e. over seeds [95% bootstrap interval]"
                 + (", %)" if percent else ")"))
        parts.append((f"% {title}" if latex else f"### {title}") + "\n\n" + render(headers, rows, fmt))
    return "\n\n".join(parts) + "\n"
