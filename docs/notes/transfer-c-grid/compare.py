"""The shipped transfer entries against others of the same boards: test probe accuracy per
entrant and task, the change per layer, and the Cs validation chose.

    python docs/notes/transfer-c-grid/compare.py                     # against the commit with the first entries
    python docs/notes/transfer-c-grid/compare.py --before <commit>
    python docs/notes/transfer-c-grid/compare.py --before <board folder>   # e.g. the same networks probed
                                                                            # with C in {0.01, 0.1, 1}

Reads the entries' JSON only (from git, or a board folder's entries/<board>/), so it runs in a second."""
from __future__ import annotations

import argparse
import collections
import json
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
ENTRIES = "harness/leaderboards/entries"


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def old_entries(rev: str, board: str) -> dict[tuple, dict]:
    if Path(rev).is_dir():
        return key_by_entrant(json.loads(p.read_text()) for p in sorted((Path(rev) / "entries" / board).glob("*.json")))
    names = git("ls-tree", "--name-only", f"{rev}:{ENTRIES}/{board}").split()
    return key_by_entrant(json.loads(git("show", f"{rev}:{ENTRIES}/{board}/{n}")) for n in names if n.endswith(".json"))


def new_entries(board: str) -> dict[tuple, dict]:
    return key_by_entrant(json.loads(p.read_text()) for p in sorted((ROOT / ENTRIES / board).glob("*.json")))


def key_by_entrant(entries) -> dict[tuple, dict]:
    return {tuple(sorted(e["entrant"].items())): e for e in entries}


def accuracy(entry: dict, task: str) -> float:
    return 100 * entry["results"][task]["metrics"]["test.probe_acc"]["mean"]


def label(key: tuple) -> str:
    entrant = dict(key)
    arm = entrant.get("arm", "").replace("backbone.options.channels=", "w").replace("algorithm.hparams.", "")
    return " ".join(x for x in (entrant["algorithm"], entrant["init"] if entrant["init"] != "trained" else "", arm,
                                entrant.get("layer", "")) if x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="5dda5e6", help="a commit, or a board folder, holding entries made with C in {0.01, 0.1, 1}")
    args = parser.parse_args()
    for board in ("transfer_best", "transfer"):
        before, after = old_entries(args.before, board), new_entries(board)
        common = sorted(set(before) & set(after), key=label)
        tasks = list(next(iter(after.values()))["results"])
        print(f"\n## {board}: {len(common)} entrants in both ({len(before)} before, {len(after)} after)\n")
        deltas = {(k, t): accuracy(after[k], t) - accuracy(before[k], t) for k in common for t in tasks}
        if board == "transfer_best":
            print("| entrant | " + " | ".join(tasks) + " | mean over tasks |")
            print("|---" * (len(tasks) + 2) + "|")
            for k in common:
                cells = [f"{accuracy(before[k], t):.1f} → {accuracy(after[k], t):.1f}" for t in tasks]
                means = [np.mean([accuracy(e[k], t) for t in tasks]) for e in (before, after)]
                print(f"| {label(k)} | " + " | ".join(cells) + f" | {means[0]:.1f} → {means[1]:.1f} |")
        else:
            by_layer = collections.defaultdict(list)
            for (k, _), d in deltas.items():
                by_layer[dict(k)["layer"]].append(d)
            print("| layer | cells | mean change (points) | largest gain | largest loss |")
            print("|---|---|---|---|---|")
            for layer, ds in sorted(by_layer.items()):
                print(f"| {layer} | {len(ds)} | {np.mean(ds):+.1f} | {max(ds):+.1f} | {min(ds):+.1f} |")
        biggest = max(deltas, key=lambda kt: abs(deltas[kt]))
        print(f"\nlargest change: {label(biggest[0])}, {biggest[1]}: {deltas[biggest]:+.1f} points; "
              f"mean {np.mean(list(deltas.values())):+.2f}, cells up {sum(d > 0 for d in deltas.values())}, "
              f"down {sum(d < 0 for d in deltas.values())} of {len(deltas)}")
        chosen = collections.Counter(r["val.C"] for e in after.values() for res in e["results"].values()
                                     for r in res["runs"])
        total = sum(chosen.values())
        print("C chosen on validation (every run, task" + (", layer" if board == "transfer" else "") + "): "
              + ", ".join(f"{c:g}: {n}" for c, n in sorted(chosen.items()))
              + f"; outside the old grid {{0.01, 0.1, 1}}: {sum(n for c, n in chosen.items() if c not in (0.01, 0.1, 1.0)) / total:.0%}")


if __name__ == "__main__":
    main()
