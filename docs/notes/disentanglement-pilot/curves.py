"""The disentanglement pilot's curves (docs/notes/disentanglement-pilot.md): DCI-D, MIG, validation
negative ELBO and KL against training steps, for each method and training correlation, every
number recomputed from the runs' stored arrays by the disentanglement protocol (disentanglement_lib's
gradient-boosting DCI).

    OMP_NUM_THREADS=1 .venv/bin/python docs/notes/disentanglement-pilot/curves.py \\
        sweeps/disentanglement_pilot_independent sweeps/disentanglement_pilot_posxy [--png curves.png]

prints a markdown table (one row per run and evaluated step) and, with --png, draws the curves
(a line per seed; a row of panels per initialisation). ``--logged`` reads the numbers each run's
protocol computed at its evaluations (``results.jsonl``: the same ``scores`` on the same arrays,
written during training) instead of recomputing them: seconds instead of half a minute of DCI
fits per evaluation.
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import pandas as pd

from harness.core import figures
from harness.core.files import read_jsonl, read_yaml_mapping
from harness.reports import collect

PANELS = (("test.dci_d", "test DCI-D"), ("test.mig", "test MIG"), ("val.loss", "val neg. ELBO"), ("val.kl", "val KL"))
NAMES = {"beta_vae": "β-VAE", "beta_vae_hfs": "β-VAE + HFS", "beta_tcvae": "β-TCVAE", "beta_tcvae_hfs": "β-TCVAE + HFS"}


def logged(runs: list[Path], config_paths: list[str]) -> pd.DataFrame:
    """The frame ``collect.load_runs`` would recompute, from the numbers the runs logged."""
    rows = []
    for run in runs:
        cfg = read_yaml_mapping(run / "config.yaml", "run config")
        ident = {"run": run.name, "algorithm": cfg["algorithm"]["name"], "seed": cfg["seed"],
                 **{path: collect.config_value(cfg, path) for path in config_paths}}
        for line in read_jsonl(run / "results.jsonl"):
            rows.append({**ident, "step": line["step"],
                         **{f"{split}.{k}": v for split, values in line["metrics"].items()
                            for k, v in values.items() if isinstance(v, (int, float))}})
    return pd.DataFrame(rows)


def load(sweeps: list[str], from_logs: bool = False) -> pd.DataFrame:
    runs = [run for sweep in sweeps for run in collect.run_folders(sweep)[0]]
    paths = ["dataset.options.correlated", "algorithm.hparams.init"]
    frame = logged(runs, paths) if from_logs else collect.load_runs(runs, paths)
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
    parser.add_argument("--logged", action="store_true", help="the numbers the runs logged, not recomputed")
    args = parser.parse_args()
    frame = load(args.sweeps, args.logged)
    print(table(frame))
    if args.png:
        draw(frame, args.png)


if __name__ == "__main__":
    main()
