"""Environment discovery: train a discovery algorithm (a :class:`~harness.models.algorithm.Discoverer`,
such as ``xrm`` or ``jtt_errors``) through the normal run loop, then write into its run folder
the inferred environment of every train and val example id and a report.

The report (``discovery.json``) holds what the discovery found without any annotation — the
final flip rate and its curve (XRM), environment sizes per class, the classes that did not split
into two environments (``degenerate``) — and, where the dataset has annotations, how well the
environments agree with them. That agreement is a diagnostic computed after the fact: nothing in
discovery, in ``best_discovery`` or in the group source reads it.

For sweeps: :func:`discover` (idempotent), :func:`harness.data.environments.best_discovery` (XRM's
tuning recipe) and :func:`harness.data.environments.load_environments`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.core import config as configs
from harness.core import figures, files
from harness.core.errors import HarnessError
from harness.core.registry import ALGORITHMS, trial_kind
from harness.data.dataset import ShiftDataset, Split, chunks
from harness.data.environments import (
    DISCOVERY_SPLITS,
    ENVIRONMENTS_FILE,
    PLOT_FILE,
    REPORT_FILE,
    save_environments,
)
from harness.models.algorithm import Algorithm, Discoverer
from harness.runs.hardware import pick_device
from harness.runs.run import check_train, train
from harness.runs.trained import load_trained

AGREEMENT_NOTE = ("diagnostic only: computed from the dataset's annotations after discovery; never used by "
                  "discovery, by best_discovery or by model selection")


def discoverers() -> list[str]:
    """Names of the registered algorithms that discover environments."""
    return [e.name for e in ALGORITHMS.entries() if isinstance(e.obj, type) and issubclass(e.obj, Discoverer)]


def check(cfg: dict[str, Any]) -> None:
    """A discovery needs a discovering algorithm and uses no groups at all; it trains as a run does."""
    name = cfg["algorithm"]["name"]
    if name not in discoverers():
        raise HarnessError(f"algorithm {name!r} does not discover environments; accepted: {', '.join(discoverers())}")
    if cfg["groups"] != "none":
        raise HarnessError(f"a discovery uses no annotation, so groups must be 'none', got {cfg['groups']!r}")
    check_train(cfg)


@trial_kind("discovery", done_files=(ENVIRONMENTS_FILE, REPORT_FILE), sets={"groups": "none"}, check=check,
            description="Train a discovery algorithm, then write every example's inferred environment.")
def discover(cfg: dict[str, Any], progress: bool | None = None) -> Path:
    """Train (or resume) the discovery run of the resolved config ``cfg``, then write its
    environments, report and flip-rate plot. Returns the run folder; a finished one is left as is."""
    check(cfg)
    out = train(cfg, progress)
    if (out / REPORT_FILE).exists():
        return out
    device = pick_device(cfg["device"])
    trained = load_trained(cfg, device)
    algo, dataset = trained.algorithm, trained.dataset
    envs = {s: infer(algo, dataset.splits[s], device, cfg["eval_batch_size"]) for s in DISCOVERY_SPLITS}
    report = make_report(cfg, dataset, envs, algo.discovery_stats(), files.read_jsonl(out / "results.jsonl"))
    save_environments(out, {s: (dataset.splits[s].ids.numpy(), dataset.splits[s].y.numpy(), envs[s])
                            for s in DISCOVERY_SPLITS})
    if report["flip_rate_curve"]:
        plot_flip_rate(report["flip_rate_curve"], out / PLOT_FILE, f"{report['algorithm']} {out.name}")
    files.write_json(out / REPORT_FILE, report)  # last: marks the discovery complete
    return out


@torch.no_grad()
def infer(algo: Algorithm, split: Split, device: torch.device, batch_size: int) -> np.ndarray:
    """The discovered environment (0/1) of every example of a split, in order."""
    parts = [algo.environments(split.inputs(idx).to(device), split.y[idx].to(device)).cpu()
             for idx in chunks(len(split), batch_size)]
    return torch.cat(parts).numpy().astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def degenerate_classes(y: np.ndarray, env: np.ndarray) -> list[int]:
    """Classes whose examples all fall into one environment (they do not split into two)."""
    return sorted(int(c) for c in np.unique(y) if len(np.unique(env[y == c])) < 2)


def make_report(cfg: dict[str, Any], dataset: ShiftDataset, envs: dict[str, np.ndarray],
                stats: dict[str, float], rows: list[dict]) -> dict[str, Any]:
    names = list(dataset.class_names)
    ys = {s: dataset.splits[s].y.numpy() for s in DISCOVERY_SPLITS}
    curve = [(r["step"], r["train_logs"]["flip_rate"]) for r in rows if "flip_rate" in r["train_logs"]]
    by_split = {s: degenerate_classes(ys[s], envs[s]) for s in DISCOVERY_SPLITS}
    return {
        "algorithm": cfg["algorithm"]["name"],
        "hash": configs.config_hash(cfg),
        "dataset": cfg["dataset"],
        "seed": cfg["seed"],
        "steps": cfg["steps"],
        "class_names": names,
        "flip_rate": stats.get("flip_rate"),
        "stats": stats,
        # training-log means over each evaluation interval; the final value above is exact
        "flip_rate_curve": {"step": [s for s, _ in curve], "flip_rate": [f for _, f in curve]} if curve else None,
        "env_sizes": {s: {names[c]: np.bincount(envs[s][ys[s] == c], minlength=2).tolist()
                          for c in range(dataset.num_classes)} for s in DISCOVERY_SPLITS},
        "degenerate": sorted(set().union(*by_split.values())),
        "degenerate_by_split": by_split,
        "annotation_agreement": agreement(dataset, envs) if dataset.annotated else None,
    }


def minority(dataset: ShiftDataset, split: str) -> np.ndarray:
    """1 for an example whose annotated attribute is not the most common one of its class in
    the training split (Waterbirds' waterbirds on land, ...)."""
    train = dataset.splits["train"]
    counts = np.zeros((dataset.num_classes, dataset.num_attr_values), dtype=np.int64)
    np.add.at(counts, (train.y.numpy(), train.attr.numpy()), 1)
    s = dataset.splits[split]
    return (s.attr.numpy() != counts.argmax(1)[s.y.numpy()]).astype(np.int64)


def agreement(dataset: ShiftDataset, envs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per split: accuracy of environment 1 as a predictor of the annotated minority, adjusted
    Rand index between the two binary partitions, and minority precision / recall."""
    from sklearn import metrics

    out: dict[str, Any] = {"note": AGREEMENT_NOTE}
    for split, env in envs.items():
        truth = minority(dataset, split)
        out[split] = {
            "accuracy": float(np.mean(env == truth)) if len(env) else None,
            "ari": float(metrics.adjusted_rand_score(truth, env)) if len(env) else None,
            "minority_precision": float(truth[env == 1].mean()) if (env == 1).any() else None,
            "minority_recall": float(env[truth == 1].mean()) if (truth == 1).any() else None,
        }
    return out


def plot_flip_rate(curve: dict[str, list], path: Path, title: str) -> None:
    """The flip-rate curve as a PNG."""
    fig = figures.figure(5, 3.2)
    ax = fig.add_subplot()
    ax.plot(curve["step"], curve["flip_rate"], marker=".")
    ax.set(xlabel="step", ylabel="flip rate", title=title, ylim=(0, None))
    ax.grid(alpha=0.3)
    figures.save(fig, path)
