"""Pictures of a trained model, drawn by its protocol (the disentanglement protocol: inputs,
reconstructions and latent traversals); ``harness leaderboard pictures`` draws every entry's.

A run keeps one checkpoint, its last evaluation's, so the pictures show the model at the run's
end, whichever checkpoint a selection rule picked for the numbers.
"""
from __future__ import annotations

from pathlib import Path

import torch

from harness.runs.trained import load_trained


def run_pictures(run_dir: str | Path, path: str | Path) -> Path:
    """Rebuild a finished run's model from its folder (config and checkpoint); draw its test split."""
    trained = load_trained(run_dir, torch.device("cpu"))
    return trained.protocol.pictures(trained.algorithm, trained.dataset.splits["test"], Path(path))
