"""The quickstart: the worst-group leaderboard on colored_digits from one command.

A sweep of ERM and GroupDRO with annotated groups and, when discovery is installed, the
discovery arms without annotations (XRM + GroupDRO, JTT), 3 seeds, on worker processes; then
the board's entries are written from the sweep and its table printed.
"""
from __future__ import annotations

import importlib.util
from typing import Any

from harness.registry import ALGORITHMS

DATASET = "colored_digits"
SEEDS = 3
ANNOTATED_ARMS = ("erm", "group_dro")
# Integration point with discovery (harness.discovery): (discovery method, the algorithm that
# trains on its inferred groups). An arm joins the sweep when harness.discovery imports and both
# names are registered algorithms.
DISCOVERY_ARMS = (("xrm", "group_dro"), ("jtt", "jtt"))
DISCOVERY = {"hparam_draws": 2, "seeds": "paired"}


def discovery_arms() -> tuple[list[tuple[str, str]], str | None]:
    """The discovery arms that can run here, and why others cannot (None if all can)."""
    if importlib.util.find_spec("harness.discovery") is None:
        return [], ("discovery is not installed (no harness.discovery): the arms without annotations "
                    f"({', '.join(f'{m} + {a}' for m, a in DISCOVERY_ARMS)}) are left out, and no number is shown for them")
    names = ALGORITHMS.names()
    ready = [(m, a) for m, a in DISCOVERY_ARMS if m in names and a in names]
    missing = [f"{m} + {a}" for m, a in DISCOVERY_ARMS if (m, a) not in ready]
    return ready, (f"not registered, left out: {', '.join(missing)}" if missing else None)


def spec(steps: int, hparam_draws: int, launcher: str, arms: list[tuple[str, str]]) -> dict[str, Any]:
    """The quickstart's sweep spec (the same shape as a YAML spec for ``harness sweep``)."""
    algorithms: list[Any] = list(ANNOTATED_ARMS)
    algorithms += [{"name": algorithm, "groups": [f"inferred:{method}"]} for method, algorithm in arms]
    raw: dict[str, Any] = {
        "name": "quickstart", "datasets": [DATASET], "algorithms": algorithms, "groups": ["annotated"],
        "hparam_draws": hparam_draws, "seeds": SEEDS, "launcher": launcher,
        "overrides": {"steps": steps, "eval_every": max(1, steps // 12)},
    }
    if arms:
        raw["discovery"] = {"algorithms": sorted({m for m, _ in arms}), **DISCOVERY}
    return raw
