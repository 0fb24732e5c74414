"""The quickstart: the worst-group leaderboard on colored_digits from one command.

A sweep of ERM and GroupDRO with annotated groups, and, without any annotation, JTT (its own
error set; selected on validation worst-class accuracy) and GroupDRO on XRM's discovered groups
(selected on the discovered validation groups), 3 seeds, on worker processes; then the board's
entries are written from the sweep and its table printed.
"""
from __future__ import annotations

from typing import Any

DATASET = "colored_digits"
SEEDS = 3
ANNOTATED_ARMS = ("erm", "group_dro")
# JTT trains on its own error set, so it needs no group source; its identification model gets a
# sixth of the run (the default 500 steps would leave little for the final model).
UNANNOTATED_ARMS = ({"name": "jtt", "groups": ["none"], "id_steps_fraction": 6},)
# (discovery method, the algorithm that trains on its inferred groups)
DISCOVERY_ARMS = (("xrm", "group_dro"),)
DISCOVERY = {"hparam_draws": 2, "seeds": "paired"}


def spec(steps: int, hparam_draws: int, launcher: str | dict[str, Any]) -> dict[str, Any]:
    """The quickstart's sweep spec (the same shape as a YAML spec for ``harness sweep``);
    ``launcher`` as a spec writes it (``processes:2``, ``{name: slurm, ...}``)."""
    algorithms: list[Any] = list(ANNOTATED_ARMS)
    algorithms += [{"name": arm["name"], "groups": arm["groups"],
                    "overrides": {"algorithm.hparams.id_steps": max(1, steps // arm["id_steps_fraction"])}}
                   for arm in UNANNOTATED_ARMS]
    algorithms += [{"name": algorithm, "groups": [f"inferred:{method}"]} for method, algorithm in DISCOVERY_ARMS]
    return {
        "name": "quickstart", "datasets": [DATASET], "algorithms": algorithms, "groups": ["annotated"],
        "hparam_draws": hparam_draws, "seeds": SEEDS, "launcher": launcher,
        "overrides": {"steps": steps, "eval_every": max(1, steps // 12)},
        "discovery": {"algorithms": sorted({m for m, _ in DISCOVERY_ARMS}), **DISCOVERY},
    }
