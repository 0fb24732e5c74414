"""The tables and pictures of docs/notes/transfer-vit-study.md, from the sweeps of
experiments/transfer_vit.yaml (the ViT rows) and experiments/transfer_ssl_je.yaml (the CNN rows:
DirectCLR, single-negative noise SimCLR, random init); every number recomputed from the probe
runs' stored predictions by `harness.reports.collect`; CKA from their feature caches.

    OMP_NUM_THREADS=1 .venv/bin/python docs/notes/transfer-vit-study/analyse.py sweeps/transfer_vit sweeps/transfer_ssl_je

prints markdown tables and writes cka-<task>.png and rankme.png beside this file.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.reports import collect  # noqa: E402
from harness.reports.similarity import model_cka  # noqa: E402

HERE = Path(__file__).parent
BLOCKS = ["block1", "block2", "block3", "block4"]
CLASS_TASKS = ["fashion_classes", "background_object", "digits", "dsprites_shape"]
SPATIAL_TASKS = ["dsprites_posx", "dsprites_posy", "dsprites_scale"]
NUISANCE_TASKS = ["background_place", "colored_fashion_colour"]
ORDER = ["random", "supervised", "SimCLR", "VICReg", "DirectCLR", "SimCLR 1-neg noise", "I-JEPA", "I-JEPA+StoP", "MAE",
         "CNN random", "CNN DirectCLR", "CNN SimCLR 1-neg noise"]
FAMILY = {"SimCLR": "JE", "VICReg": "JE", "DirectCLR": "JE", "SimCLR 1-neg noise": "JE", "I-JEPA": "JE",
          "I-JEPA+StoP": "JE", "MAE": "reconstruction", "supervised": "supervised", "random": "none"}


def method(row: pd.Series) -> str:
    """A short name of an entrant (algorithm, init, arm)."""
    arm = row["arm"]
    cnn = "backbone.name=vit" not in arm.replace('"', "")  # every ViT arm names its backbone
    if row["init"] == "random":
        name = "random"
    elif row["algorithm"] == "ijepa":
        name = "I-JEPA+StoP" if "stop_sigma" in arm else "I-JEPA"
    elif row["algorithm"] == "simclr" and "single_negative" in arm:
        name = "SimCLR 1-neg noise"
    else:
        name = {"supervised_pretrain": "supervised", "simclr": "SimCLR", "vicreg": "VICReg", "mae": "MAE",
                "directclr": "DirectCLR"}[row["algorithm"]]
    return f"CNN {name}" if cnn else name


def mean_se(values: pd.Series) -> tuple[float, float]:
    v = values.dropna().to_numpy(dtype=float)
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan"))


def best_layers(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run and task, the layer with the best validation probe accuracy (ties: the shallower)."""
    ordered = frame.sort_values(["run", "dataset", "val.probe_acc", "step"], ascending=[True, True, False, True])
    return ordered.groupby(["run", "dataset"], as_index=False).first()


def cell(values: pd.Series) -> str:
    if values.dropna().empty:
        return "-"
    m, s = mean_se(values * 100)
    return f"{m:.1f} ± {s:.1f}"


def per_block_table(frame: pd.DataFrame, tasks: list[str]) -> str:
    lines = ["| method | layer | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    for name in [m for m in ORDER if m in set(frame["method"])]:
        sub = frame[frame["method"] == name]
        layers = [layer for layer in sub.sort_values("step")["layer"].unique()]
        for layer in layers:
            at = sub[sub["layer"] == layer]
            lines.append(f"| {name} | {layer} | " + " | ".join(cell(at[at["dataset"] == t]["test.probe_acc"])
                                                             for t in tasks) + " |")
    return "\n".join(lines)


def best_table(best: pd.DataFrame, tasks: list[str]) -> str:
    """Best-layer test accuracy, the chosen layers, and whether the method beats random init by
    more than 3 standard errors (of the difference of the two means)."""
    lines = ["| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for name in [m for m in ORDER if m in set(best["method"])]:
        sub = best[best["method"] == name]
        reference = best[best["method"] == ("CNN random" if name.startswith("CNN") else "random")]
        cells = []
        for task in tasks:
            at = sub[sub["dataset"] == task]
            if at.empty:
                cells.append("-")
                continue
            m, s = mean_se(at["test.probe_acc"] * 100)
            mark = ""
            if not reference.empty and "random" not in name:
                rm, rs = mean_se(reference[reference["dataset"] == task]["test.probe_acc"] * 100)
                gap = m - rm
                se = math.sqrt(s ** 2 + rs ** 2)
                mark = " **L**" if gap > 3 * se else ""
            layers = "/".join(sorted(set(at["layer"]), key=lambda x: (len(x), x)))
            cells.append(f"{m:.1f} ± {s:.1f} ({layers}){mark}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rankme_plot(frame: pd.DataFrame, task: str, path: Path) -> str:
    vit = frame[(frame["layer"].isin(BLOCKS)) & (frame["dataset"] == task) & ~frame["method"].str.startswith("CNN")]
    fig, ax = plt.subplots(figsize=(4.2, 3.0), dpi=90)
    lines = ["| method | " + " | ".join(BLOCKS) + " |", "|---|" + "---|" * len(BLOCKS)]
    for name in [m for m in ORDER if m in set(vit["method"])]:
        sub = vit[vit["method"] == name]
        means = [mean_se(sub[sub["layer"] == b]["train.rankme"])[0] for b in BLOCKS]
        ax.plot(range(1, 5), means, marker="o", label=name)
        lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in means) + " |")
    ax.set_xticks(range(1, 5))
    ax.set_xlabel("ViT block")
    ax.set_ylabel(f"RankMe ({task} train)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return "\n".join(lines)


def cka_plot(frame: pd.DataFrame, task: str, path: Path) -> dict[str, pd.DataFrame]:
    """Per block, linear CKA between the ViT methods on ``task``'s test split, each cell the mean
    over the pairs of seeds (the diagonal: seed 0 against seed 1 of the same method)."""
    runs = frame[~frame["method"].str.startswith("CNN")][["method", "path", "seed"]].drop_duplicates()
    names = [m for m in ORDER if m in set(runs["method"])]
    runs = runs.assign(order=runs["method"].map(names.index)).sort_values(["order", "seed"])
    fig, axes = plt.subplots(1, len(BLOCKS), figsize=(3.8 * len(BLOCKS), 3.9), dpi=80)
    out = {}
    for ax, block in zip(axes, BLOCKS):
        _, matrix = model_cka(list(runs["path"]), task, block)
        owner = runs["method"].to_numpy()
        mean = np.zeros((len(names), len(names)))
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                cells = matrix[np.ix_(owner == a, owner == b)]
                mean[i, j] = cells[~np.eye(len(cells), dtype=bool)].mean() if a == b else cells.mean()
        out[block] = pd.DataFrame(mean, index=names, columns=names)
        ax.imshow(mean, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=70, fontsize=6)
        ax.set_yticks(range(len(names)), names if block == BLOCKS[0] else [], fontsize=6)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{mean[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if mean[i, j] < 0.6 else "black")
        ax.set_title(block, fontsize=8)
    fig.suptitle(f"linear CKA between methods, {task} test (diagonal: seed 0 vs seed 1)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return out


def main(sweeps: list[str]) -> None:
    frame = pd.concat([collect.load_runs(collect.run_folders(sweep)[0]) for sweep in sweeps], ignore_index=True)
    frame = frame[frame["protocol"] == "transfer"].copy()
    frame["method"] = frame.apply(method, axis=1)
    tasks = CLASS_TASKS + SPATIAL_TASKS + NUISANCE_TASKS
    best = best_layers(frame)
    print("## best layer\n" + best_table(best, tasks))
    print("\n## per layer\n" + per_block_table(frame, tasks))
    print("\n## rankme (fashion_classes)\n" + rankme_plot(frame, "fashion_classes", HERE / "rankme.png"))
    for task in ("fashion_classes", "dsprites_posx"):
        blocks = cka_plot(frame, task, HERE / f"cka-{task}.png")
        for block, table in blocks.items():
            print(f"\n## CKA {task} {block}\n" + table.round(2).to_markdown())
    vit = best[~best["method"].str.startswith("CNN")]
    print("\n## family means (best layer, ViT)")
    for family in ("JE", "reconstruction", "supervised", "none"):
        sub = vit[vit["method"].map(FAMILY) == family]
        row = [f"{100 * sub[sub['dataset'].isin(g)]['test.probe_acc'].mean():.1f}"
               for g in (CLASS_TASKS, SPATIAL_TASKS)]
        print(f"{family}: class {row[0]} spatial {row[1]}")


if __name__ == "__main__":
    main(sys.argv[1:])
