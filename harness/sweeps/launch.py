"""Launching a planned sweep as the commands do (``harness sweep``, ``harness quickstart``,
``harness leaderboard reproduce``): the spec's launcher for the folder, checked ready before
anything is written, the sweep run, and what happened said in the same words by all three."""
from __future__ import annotations

from pathlib import Path

from harness.sweeps.launchers import make_launcher
from harness.sweeps.planner import Report
from harness.sweeps.sweep import Spec, run_sweep
from harness.sweeps.trials import ERROR

SHOWN = 10  # failures listed by name


def launch(spec: Spec, folder: str | Path) -> Report:
    """Run every trial of ``spec`` into ``folder`` on the spec's launcher (resuming, skipping done ones)."""
    launcher = make_launcher(spec.launcher, Path(folder).resolve(), spec.name)
    launcher.ready()
    return run_sweep(spec, folder, launcher)


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
