"""An entry accounts for its whole sweep: its candidate runs are every run its sweep's spec plans
for its entrant (every hparam draw and seed), so an entry made from a copy of a sweep with one
draw removed (the best on test, the worst on validation) is caught and the missing run named.

The spec is the sweep folder's ``sweep.yaml`` where the folder is present, else the one the entry
records (``provenance.spec``, written by ``submit``). The planner lists the trials it plans
without running anything (a trial on inferred groups: one hash per discovery it may choose).
Planned trials fall into families: the same config but for the seed and the hparam draw. Every
family that holds one of the entry's candidates must be there whole, and every candidate must be
planned. Entries of code that is not ours (level ``claimed``, from a bundle) name no spec.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.core import files
from harness.core.errors import HarnessError, brief
from harness.leaderboards import levels
from harness.sweeps import sweep

# What differs between the runs of one entrant's family: the seed and the hparam draw.
DRAWN = ("seed", "run_dir", "output_dir")
DRAWN_ALGORITHM = ("hparams_seed", "hparams")
SHOWN = 5  # missing or unplanned runs named in one message


def recorded_spec(sweep_dir: str | Path) -> dict[str, Any] | None:
    """The spec a sweep folder was run with (``sweep.yaml``), as an entry records it; None if the
    folder has none."""
    path = Path(sweep_dir) / sweep.SPEC_FILE
    return files.read_yaml_mapping(path, "sweep spec") if path.is_file() else None


def unaccounted(entry: dict[str, Any], where: Path | None) -> list[str]:
    """What keeps the entry from accounting for its whole sweep (empty if nothing): runs of its
    entrant the spec plans and the entry lacks, runs the spec does not plan, or no spec at all.
    ``where``: the sweep folder holding its runs (None: verified from shipped predictions)."""
    if levels.level_of(entry)[0] == "claimed":
        return []
    raw = recorded_spec(where) if where is not None else None
    if raw is None:
        raw = entry["provenance"].get("spec")
    if not isinstance(raw, dict):
        at = f"{where / sweep.SPEC_FILE} is missing and " if where is not None else ""
        return [f"whole sweep: {at}the entry records no spec (provenance.spec), so it cannot be shown to hold "
                "every run its sweep planned for its entrant; submit it again from its sweep folder"]
    try:
        plan = sweep.Plan(sweep.parse_spec(raw), where or Path(entry["provenance"]["sweep"]))
        families: dict[str, list[set[str]]] = {}
        for root in plan.roots:
            families.setdefault(_family(root.cfg), []).append(plan.planner.possible(root))
    except HarnessError as exc:
        return [f"whole sweep: its spec cannot be planned: {brief(str(exc))}"]
    candidates = {h for result in entry["results"].values() for h in result["candidates"]}
    touched = [runs for runs in families.values() if any(possible & candidates for possible in runs)]
    missing = sorted(min(possible) if len(possible) == 1 else f"one of {'/'.join(sorted(possible))}"
                     for runs in touched for possible in runs if not possible & candidates)
    planned = set().union(*(possible for runs in families.values() for possible in runs))
    unplanned = sorted(candidates - planned)
    problems = []
    if missing:
        problems.append(f"whole sweep: {len(missing)} run(s) its spec plans for this entrant are not among its "
                        f"candidates: {_some(missing)}")
    if unplanned:
        problems.append(f"whole sweep: {len(unplanned)} candidate run(s) its spec does not plan: {_some(unplanned)}")
    return problems


def _family(cfg: dict[str, Any]) -> str:
    """A planned trial's config less what its seed and hparam draw set."""
    rest = {k: v for k, v in cfg.items() if k not in DRAWN}
    rest["algorithm"] = {k: v for k, v in cfg["algorithm"].items() if k not in DRAWN_ALGORITHM}
    return json.dumps(rest, sort_keys=True, default=str)


def _some(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
