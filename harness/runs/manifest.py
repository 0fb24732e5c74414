"""A run's manifest: the sha256 of each predictions file, recorded as soon as the file is
written, so that collect and verify notice a predictions file that is missing, altered, added
or unreadable instead of silently computing other numbers."""
from __future__ import annotations

import json
from pathlib import Path

from harness.core import files

MANIFEST = "manifest.json"


def read(run_dir: Path) -> dict[str, str]:
    """predictions file (its path under ``predictions/``) → sha256; empty when the run has no
    manifest yet."""
    path = run_dir / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def record(run_dir: Path, manifest: dict[str, str], path: Path) -> None:
    """Add the just-written predictions file ``path`` to ``manifest`` and store it."""
    manifest[name(run_dir, path)] = files.sha256(path)
    files.write_json(run_dir / MANIFEST, manifest)


def name(run_dir: Path, path: Path) -> str:
    """How the manifest names a predictions file: its path under ``predictions/``."""
    return path.relative_to(run_dir / "predictions").as_posix()


def problem(run_dir: Path) -> str | None:
    """Why the run's predictions cannot be trusted, naming each file; None if they can."""
    path = run_dir / MANIFEST
    if not path.exists():
        return f"no {MANIFEST} (the sha256 of its predictions), so its predictions cannot be checked"
    try:
        listed = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{MANIFEST} is not valid JSON"
    if not isinstance(listed, dict):
        return f"{MANIFEST} is not a mapping of file names to sha256"
    folder = run_dir / "predictions"
    present = {name(run_dir, p) for p in folder.rglob("*.npz")}
    altered = sorted(n for n in set(listed) & present if files.sha256(folder / n) != listed[n])
    problems = [f"{what} predictions/{', predictions/'.join(names)}" for what, names in (
        ("missing", sorted(set(listed) - present)), ("altered (sha256 differs)", altered),
        ("not in its manifest", sorted(present - set(listed)))) if names]
    return "; ".join(problems) or None
