"""Every benchmark still runs: each script in benchmarks/ at its ``--smoke`` size, in a subprocess
with one thread, exits 0, leaves nothing in its working folder, and ends with ``ratio: <a finite
number>``. A new script is covered by being there; a module the scripts import (their shared
driver) is not a script."""
import ast
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
RATIO = re.compile(r"ratio: (\S+)")


def helpers() -> set[str]:
    """Benchmark modules that another benchmark imports (e.g. ``import side_by_side``)."""
    names = {p.stem for p in BENCHMARKS.glob("*.py")}
    imported = set()
    for path in BENCHMARKS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names} & names
            elif isinstance(node, ast.ImportFrom) and node.module in names:
                imported.add(node.module)
    return imported


SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.stem not in helpers())


def test_the_scripts_are_found():
    assert "side_by_side" in helpers()
    assert {"feature_cache", "step_overhead", "vs_peers"} <= {p.stem for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_a_benchmark_runs_at_its_smoke_size(script: Path, tmp_path: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # the timeout only stops a hung script; a smoke run takes seconds
    done = subprocess.run([sys.executable, str(script), "--smoke"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    match = RATIO.fullmatch(last)
    assert match, f"last line {last!r}"
    assert math.isfinite(float(match.group(1)))
    assert list(tmp_path.iterdir()) == []
