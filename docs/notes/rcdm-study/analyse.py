"""The faithfulness tables of docs/notes/rcdm-study.md, from a sweep of experiments/rcdm_study.yaml:
every number recomputed from the visualize runs' stored predictions (`harness.reports.collect`,
the visualization protocol's own functions).

    OMP_NUM_THREADS=1 .venv/bin/python docs/notes/rcdm-study/analyse.py sweeps/rcdm_study

prints markdown tables: each metric as mean ± standard error over the seeds (n = the seeds found),
and per seed the headline numbers with their standard error over the N held-out conditionings.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from harness.protocols.visualization import retrieval_rank_probabilities
from harness.reports import collect

ORDER = ["SimCLR w32, backbone", "SimCLR w32, projector output", "SimCLR w128, backbone", "supervised w32, backbone"]
RETRIEVAL = ["top1", "top5", "shuffled_top1", "shuffled_top5", "unconditional_top1", "unconditional_top5"]
FACTOR_COLUMNS = {"place": ["real_acc", "retention", "shuffled_retention", "unconditional_retention", "disagreement",
                            "unconditional_disagreement"],
                  "y": ["real_acc", "retention", "shuffled_retention", "unconditional_retention"],
                  "class": ["real_acc", "retention", "unconditional_retention", "disagreement",
                            "unconditional_disagreement"]}


def condition(row: pd.Series) -> str:
    """A short name of a visualize run: network (algorithm, last-block width) and layer."""
    net = {"simclr": "SimCLR", "supervised_pretrain": "supervised"}[row["algorithm"]]
    width = "w128" if "128" in row["arm"] else "w32"
    layer = "projector output" if row["layer"] == "output" else row["layer"]
    return f"{net} {width}, {layer}"


def mean_se(values: pd.Series) -> tuple[float, float]:
    v = values.dropna().to_numpy(dtype=float)
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan"))


def cell(values: pd.Series) -> str:
    m, s = mean_se(values * 100)
    return f"{m:.0f} ± {s:.0f}"


def seeds_table(frame: pd.DataFrame, metrics: list[str]) -> str:
    """Mean ± s.e. over seeds of each metric, one row per condition."""
    lines = ["| network, layer | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for name in ORDER:
        sub = frame[frame["condition"] == name]
        if sub.empty:
            continue
        lines.append(f"| {name} | {sub['seed'].nunique()} | "
                     + " | ".join(cell(sub[f"test.{m}"]) for m in metrics) + " |")
    return "\n".join(lines)


def per_conditioning(run: Path) -> dict[str, np.ndarray]:
    """Per held-out conditioning image: top-1 and top-5 retrieval (the mean over its K samples)
    and the fraction of its K samples that keep the image's place."""
    with np.load(run / "predictions" / "retrieval.npz", allow_pickle=False) as r:
        k, mean, spread = int(r["k"]), r["mean"], r["spread"]
        keys = (r["conditioning"] - mean) / spread
        queries = (r["samples"] - mean) / spread
    targets = np.repeat(np.arange(len(keys)), k)
    out = {f"top{top}": retrieval_rank_probabilities(queries, keys, targets, top).reshape(-1, k).mean(1)
           for top in (1, 5)}
    with np.load(run / "predictions" / "factors" / "place.npz", allow_pickle=False) as f:
        out["place"] = (f["samples"].reshape(-1, k) == f["truth"][:, None]).mean(1)
    return out


def per_seed_table(frame: pd.DataFrame) -> str:
    """Per condition and seed: top-1, top-5 and place retention, ± s.e. over the N conditionings."""
    lines = ["| network, layer | seed | top-1 | top-5 | place retention |", "|---|---|---|---|---|"]
    runs = frame[frame["factor"] == "-"][["condition", "seed", "path"]].drop_duplicates()
    for name in ORDER:
        for _, row in runs[runs["condition"] == name].sort_values("seed").iterrows():
            scores = per_conditioning(Path(row["path"]))
            cells = [f"{100 * v.mean():.0f} ± {100 * v.std(ddof=1) / math.sqrt(len(v)):.0f}"
                     for v in (scores["top1"], scores["top5"], scores["place"])]
            lines.append(f"| {name} | {row['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(sweep: str) -> None:
    done, _ = collect.run_folders(sweep)
    frame = collect.load_runs(done)
    frame = frame[frame["protocol"] == "visualization"].copy()
    frame["condition"] = frame.apply(condition, axis=1)
    print("## retrieval (mean ± s.e. over seeds, %)\n" + seeds_table(frame[frame["factor"] == "-"], RETRIEVAL))
    for factor, metrics in FACTOR_COLUMNS.items():
        print(f"\n## {factor} (mean ± s.e. over seeds, %)\n" + seeds_table(frame[frame["factor"] == factor], metrics))
    print("\n## per seed (± s.e. over the held-out conditionings, %)\n" + per_seed_table(frame))


if __name__ == "__main__":
    main(sys.argv[1])
