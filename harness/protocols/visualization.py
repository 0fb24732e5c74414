"""The visualization protocol: how faithful a representation-conditioned diffusion model's samples
are to their conditioning (runs written by visualize trials, ``harness.runs.visualize``).

From ``predictions/retrieval.npz`` (the representations of N held-out images and of K samples
conditioned on each: on its own representation, on a shuffled one's, on none) :meth:`scores`
recomputes retrieval: the cosine similarity (of representations standardised by the training
set's mean and spread) of a sample to each of the N conditionings ranks its own first (top-1) or
among the first five (top-5); ties are broken at random in expectation, so a constant
representation scores chance, 1/N. Samples conditioned on a shuffled representation, and
unconditional ones, are scored against the image they stand in for: the baselines.

From ``predictions/factors/<factor>.npz`` (a pixel probe trained on real images, read on the
real held-out images and on the samples): attribute retention, the fraction of samples whose
factor agrees with their conditioning image's (``real_acc``: the probe on the real images, the
ceiling), and disagreement, the fraction of pairs among one conditioning's K samples whose
factor differs (what the representation left free), averaged over the N conditionings.

In collect's frame a run has one row with factor ``-`` (retrieval; rule ``retrieval``) and one
per factor (rule ``factors``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.registry import PROTOCOLS
from harness.protocols.base import Display, Protocol, Rule

PREDICTIONS = "predictions"
RETRIEVAL = "retrieval.npz"
FACTORS = "factors"
RETRIEVAL_ROW = "-"


@PROTOCOLS.register("visualization")
class Visualization(Protocol):
    """How faithful a representation-conditioned diffusion model's samples are to their conditioning.

    Retrieval of the conditioning against shuffled and unconditional baselines; per factor,
    retention and disagreement among the samples of one conditioning."""

    trains = False  # visualize trials (harness.runs.visualize) write its runs, not the training loop
    splits = ("test",)
    metrics = {
        "top1": Display("retrieval top-1"),
        "top5": Display("retrieval top-5"),
        "shuffled_top1": Display("shuffled top-1"),
        "shuffled_top5": Display("shuffled top-5"),
        "unconditional_top1": Display("unconditional top-1"),
        "unconditional_top5": Display("unconditional top-5"),
        "chance_top1": Display("chance top-1"),
        "retention": Display("retention"),
        "real_acc": Display("probe acc on real"),
        "shuffled_retention": Display("shuffled retention"),
        "unconditional_retention": Display("unconditional retention"),
        "disagreement": Display("disagreement among K"),
        "unconditional_disagreement": Display("unconditional disagreement"),
    }
    # one rule per kind of row, so that collect shows a table of each (a rule keeps the rows that have its metric)
    rules = (Rule("retrieval", "test", "top1", needs="nothing but the held-out images' representations"),
             Rule("factors", "test", "retention", needs="the held-out images' factor values"))
    reported = ("test.top1", "test.shuffled_top1", "test.unconditional_top1", "test.retention",
                "test.disagreement")
    columns = ("pretrain_dataset", "layer", "factor")

    def scores(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> dict[str, dict[str, Any]]:
        k = int(arrays["k"])
        if "conditioning" in arrays:
            return {"test": retrieval_scores(arrays, k)}
        return {"test": factor_scores(arrays, k)}

    def evaluations(self, run_dir: Path) -> list[tuple[dict[str, Any], Path]]:
        out = [({"factor": RETRIEVAL_ROW, "step": 0}, run_dir / PREDICTIONS / RETRIEVAL)]
        factors = sorted((run_dir / PREDICTIONS / FACTORS).glob("*.npz"))
        return out + [({"factor": p.stem, "step": 0}, p) for p in factors]

    def identity(self, cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        return {"pretrain_dataset": cfg["dataset"]["name"],
                "layer": json.loads((run_dir / "info.json").read_text())["layer"]}


def retrieval_rank_probabilities(queries: np.ndarray, keys: np.ndarray, targets: np.ndarray, top: int) -> np.ndarray:
    """Per query, the probability that its target key ranks within the first ``top`` by cosine
    similarity, ties broken uniformly at random: with g keys more similar and t others as
    similar, the target's position is uniform over g .. g + t."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    c = keys / np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), 1e-12)
    sim = np.round(q @ c.T, 6)  # equal up to float noise counts as a tie
    own = sim[np.arange(len(q)), targets][:, None]
    greater = (sim > own).sum(1)
    ties = (sim == own).sum(1) - 1
    return np.clip((top - greater) / (ties + 1), 0.0, 1.0)


def retrieval_scores(arrays: dict[str, np.ndarray], k: int) -> dict[str, float]:
    """Top-1/top-5 retrieval of each sample set's conditioning image among the N."""
    mean, spread = arrays["mean"], arrays["spread"]
    keys = (arrays["conditioning"] - mean) / spread
    n = len(keys)
    targets = np.repeat(np.arange(n), k)
    out: dict[str, float] = {"chance_top1": 1.0 / n}
    for name, prefix in (("samples", ""), ("shuffled", "shuffled_"), ("unconditional", "unconditional_")):
        queries = (arrays[name] - mean) / spread
        for top in (1, 5):
            out[f"{prefix}top{top}"] = float(retrieval_rank_probabilities(queries, keys, targets, top).mean())
    return out


def disagreement(predicted: np.ndarray, k: int) -> float:
    """The fraction of pairs among each group of ``k`` consecutive predictions that differ,
    averaged over the groups."""
    groups = predicted.reshape(-1, k)
    differ = groups[:, :, None] != groups[:, None, :]
    return float(differ.sum((1, 2)).mean() / (k * (k - 1)))


def factor_scores(arrays: dict[str, np.ndarray], k: int) -> dict[str, float]:
    """Retention of a factor by the samples (agreement with their conditioning image's value),
    on the real images, under the baselines, and disagreement among each conditioning's K."""
    truth = np.repeat(arrays["truth"], k)
    return {"real_acc": float(np.mean(arrays["real"] == arrays["truth"])),
            "retention": float(np.mean(arrays["samples"] == truth)),
            "shuffled_retention": float(np.mean(arrays["shuffled"] == truth)),
            "unconditional_retention": float(np.mean(arrays["unconditional"] == truth)),
            "disagreement": disagreement(arrays["samples"], k),
            "unconditional_disagreement": disagreement(arrays["unconditional"], k)}
