"""The code version a run or an entry records: the package's version and, from a git checkout,
the commit and whether it had uncommitted changes."""
from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path
from typing import Any


def code_version() -> dict[str, Any]:
    """The installed package's version and, when it runs from a git checkout, the commit and
    whether the checkout had uncommitted changes."""
    version: dict[str, Any] = {"package": f"shift-harness {importlib.metadata.version('shift-harness')}",
                               "git_commit": None, "git_dirty": None}
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30)
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return version
    if commit.returncode == 0:
        version.update(git_commit=commit.stdout.strip(), git_dirty=bool(dirty.stdout.strip()))
    return version
