"""Tables of aggregated results as markdown, LaTeX or CSV.

Cells read ``mean ± standard error [95% bootstrap interval]``, accuracies in percent. CSV keeps
every number unrounded (fractions), one column per statistic, for other tools.
"""
from __future__ import annotations

import math
from typing import Iterable

import pandas as pd
from tabulate import tabulate

from harness.core.errors import unknown

FORMATS = ("markdown", "latex", "csv")


def metric_label(metric: str) -> str:
    """``test.worst_group_acc`` → ``test worst-group acc``."""
    split, _, name = metric.partition(".")
    return f"{split} {name.replace('_acc', ' acc').replace('_', '-')}"


def cell(row: pd.Series | dict, metric: str, latex: bool = False) -> str:
    mean = row[metric]
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    pm = r"$\pm$" if latex else "±"
    text = f"{100 * mean:.1f} {pm} {100 * row[f'{metric}.se']:.1f}"
    low, high = row[f"{metric}.ci_low"], row[f"{metric}.ci_high"]
    if not (math.isnan(low) or math.isnan(high)):
        text += f" [{100 * low:.1f}, {100 * high:.1f}]"
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


def summary_tables(summary: pd.DataFrame, metrics: Iterable[str], fmt: str) -> str:
    """``harness collect``'s output: one table per selection rule (CSV: one frame, all rules)."""
    metrics = list(metrics)
    if fmt not in FORMATS:
        raise unknown("table format", fmt, FORMATS)
    if fmt == "csv":
        return summary.to_csv(index=False)
    latex = fmt == "latex"
    parts = []
    for rule, part in summary.groupby("rule", sort=False):
        headers = ["algorithm", "groups", "dataset", "draw", "seeds", *map(metric_label, metrics)]
        rows = [[r["algorithm"], r["groups"], r["dataset"], r["hparams_seed"], r["n_seeds"],
                 *(cell(r, m, latex) for m in metrics)] for _, r in part.iterrows()]
        title = f"selection: {rule} (mean ± s.e. over seeds [95% bootstrap interval], %)"
        parts.append((f"% {title}" if latex else f"### {title}") + "\n\n" + render(headers, rows, fmt))
    return "\n\n".join(parts) + "\n"
