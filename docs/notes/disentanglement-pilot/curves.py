"""The disentanglement pilot's curves (docs/notes/disentanglement-pilot.md): DCI-D, MIG, validation
negative ELBO and KL against training steps, for each method and training correlation, every
number recomputed from the runs' stored arrays by the disentanglement protocol (disentanglement_lib's
gradient-boosting DCI).

    OMP_NUM_THREADS=1 .venv/bin/python docs/notes/disentanglement-pilot/curves.py \\
        sweeps/disentanglement_pilot_independent sweeps/disentanglement_pilot_posxy [--png curves.png]

prints a markdown table (one row per run and evaluated step) and, with --png, draws the curves
(a line per seed; a row of panels per initialisation).
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import pandas as pd

from harness.core import figures
from harness.reports import collect

PANELS = (("test.dci_d", "test DCI-D"), ("test.mig", "test MIG"), ("val.loss", "val neg. ELBO"), ("val.kl", "val KL"))
NAMES = {"beta_vae": "β-VAE", "beta_vae_hfs": "β-VAE + HFS", "beta_tcvae": "β-TCVAE", "beta_tcvae_hfs": "β-TCVAE + HFS"}


def load(sweeps: list[str]) -> pd.DataFrame:
    runs = [run for sweep in sweeps for run in collect.run_folders(sweep)[0]]
    frame = collect.load_runs(runs, ["dataset.options.correlated", "algorithm.hparams.init"])
    # runs made before the init hparam existed used PyTorch's default initialisation
    frame["init"] = frame["algorithm.hparams.init"].fillna("default")
    frame["training"] = frame["dataset.options.correlated"].fillna("").replace("", "independent")
    frame["method"] = frame["algorithm"].map(NAMES).fillna(frame["algorithm"])
    return frame


def table(frame: pd.DataFrame) -> str:
    lines = ["| init | training | method | seed | step | " + " | ".join(t for _, t in PANELS) + " |",
             "|---|---|---|---|---|" + "---|" * len(PANELS)]
    for _, r in frame.sort_values(["init", "training", "method", "seed", "step"]).iterrows():
        lines.append(f"| {r['init']} | {r['training']} | {r['method']} | {r['seed']} | {int(r['step'])} | "
                     + " | ".join(f"{r[c]:.3f}" if "dci" in c or "mig" in c else f"{r[c]:.1f}" for c, _ in PANELS)
                     + " |")
    return "\n".join(lines)


def draw(frame: pd.DataFrame, path: Path) -> None:
    inits = sorted(frame["init"].unique(), reverse=True)  # kaiming first
    fig = figures.figure(4.0 * len(PANELS), 3.4 * len(inits))
    styles = {"β-VAE": "tab:blue", "β-VAE + HFS": "tab:red", "β-TCVAE": "tab:green", "β-TCVAE + HFS": "tab:purple"}
    for (row, init), (i, (column, title)) in itertools.product(enumerate(inits), enumerate(PANELS)):
        ax = fig.add_subplot(len(inits), len(PANELS), row * len(PANELS) + i + 1)
        for (training, method, seed), run in frame[frame["init"] == init].groupby(["training", "method", "seed"]):
            run = run.sort_values("step")
            ax.plot(run["step"], run[column], color=styles.get(method, "k"), marker="o", markersize=3,
                    linestyle="-" if training == "independent" else "--", alpha=0.8,
                    label=f"{method}, {training}" if seed == frame["seed"].min() else None)
        ax.set_title(f"{title} ({init} init)")
        ax.set_xlabel("training step")
        if column == "val.loss":
            ax.set_yscale("log")
        if i == 0:
            ax.legend(fontsize=7)
    figures.save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+")
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()
    frame = load(args.sweeps)
    print(table(frame))
    if args.png:
        draw(frame, args.png)


if __name__ == "__main__":
    main()
