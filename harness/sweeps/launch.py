"""Launching a planned sweep as the commands do (``harness sweep``, ``harness quickstart``,
``harness leaderboard reproduce``): the spec's launcher for the folder, checked ready before
anything is written, the sweep run, and what happened said in the same words by all three;
and one trial with the trials it needs, here (``harness probe``, ``harness visualize``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.core import config as configs
from harness.core.errors import HarnessError
from harness.sweeps.launchers import Local, make_launcher
from harness.sweeps.planner import Planner, Report, resolved_run, run_plan
from harness.sweeps.sweep import Spec, run_sweep
from harness.sweeps.trials import ERROR

SHOWN = 10  # failures listed by name


def launch(spec: Spec, folder: str | Path) -> Report:
    """Run every trial of ``spec`` into ``folder`` on the spec's launcher (resuming, skipping done ones)."""
    launcher = make_launcher(spec.launcher, Path(folder).resolve(), spec.name)
    launcher.ready()
    return run_sweep(spec, folder, launcher)


def run_locally(kind: str, cfg: dict[str, Any]) -> Path:
    """Run the ``kind`` trial of the resolved ``cfg`` and the trials it needs, in this process, each
    checked before anything is written; its folder once done, else a HarnessError with the first reason."""
    planner = Planner([resolved_run(kind, cfg)])
    planner.check()
    report = run_plan(planner, Local())
    if not report.ok:
        reasons = list(report.failed.values()) + report.blocked + report.waiting
        raise HarnessError(f"{kind} run not done: {reasons[0].splitlines()[-1] if reasons else 'no reason recorded'}")
    return configs.run_dir(cfg)


def summary(report: Report) -> str:
    """``4 trial(s) ran, 0 already done, 0 failed``, with resumed and elsewhere-finished counts when any."""
    resumed = f" ({report.resumed} resumed from checkpoints)" if report.resumed else ""
    elsewhere = f", {report.elsewhere} finished by another process" if report.elsewhere else ""
    return (f"{report.ran} trial(s) ran{resumed}, {report.skipped} already done, {len(report.failed)} failed"
            + elsewhere)


def details(report: Report, folder: str | Path) -> list[str]:
    """A line per failed trial (its error's last line, up to ``SHOWN``), per trial not planned and
    per trial blocked by a failed upstream (up to ``SHOWN``)."""
    lines = []
    for digest, error in list(report.failed.items())[:SHOWN]:
        record = Path(folder) / digest / ERROR
        lines.append(f"  failed {digest}: {error.splitlines()[-1] if error else 'no reason recorded'}"
                     + (f"  (see {record})" if record.exists() else ""))
    if len(report.failed) > SHOWN:
        lines.append(f"  ... and {len(report.failed) - SHOWN} more failed trial(s)")
    lines += [f"  not planned: {line}" for line in sorted(set(report.waiting))]
    lines += [f"  {line}" for line in report.blocked[:SHOWN]]
    if len(report.blocked) > SHOWN:
        lines.append(f"  ... and {len(report.blocked) - SHOWN} more blocked trial(s)")
    return lines
