"""Start-up cost of the CLI: ``python -c pass``, ``harness --help``, ``harness list`` (which loads every
plugin, so imports torch) and ``python -c 'import torch'``, each a
fresh subprocess, alternated over several rounds; medians printed. The last line is
``ratio: <harness --help wall / python -c pass wall>``. ``--smoke``: one round, no warm-up pass.

    OMP_NUM_THREADS=1 python benchmarks/startup.py --rounds 7
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {"python -c pass": [sys.executable, "-c", "pass"],
            "harness --help": [sys.executable, "-m", "harness", "--help"],
            "harness list": [sys.executable, "-m", "harness", "list"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"]}  # what list cannot avoid


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="one round without warming the file cache: seconds")
    args = parser.parse_args()
    if args.smoke:
        args.rounds = 1
    for command in [] if args.smoke else COMMANDS.values():  # warm the file cache
        wall(command)
    walls: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for r in range(args.rounds):
        for name, command in COMMANDS.items():
            walls[name].append(wall(command))
        print(f"round {r}: " + ", ".join(f"{name} {w[-1]:.3f} s" for name, w in walls.items()))
    medians = {name: statistics.median(w) for name, w in walls.items()}
    print("median: " + ", ".join(f"{name} {m:.3f} s" for name, m in medians.items()))
    print(f"ratio: {medians['harness --help'] / medians['python -c pass']:.2f}")


if __name__ == "__main__":
    main()
