"""Pictures of a trained model, drawn by its protocol (the disentanglement protocol: inputs,
reconstructions and latent traversals); ``harness leaderboard pictures`` draws every entry's.

A run keeps one checkpoint, its last evaluation's, so the pictures show the model at the run's
end, whichever checkpoint a selection rule picked for the numbers.
"""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from harness.core.errors import HarnessError
from harness.core.files import load_torch
from harness.runs.run import build_algorithm, build_dataset, protocol_of


def run_pictures(run_dir: str | Path, path: str | Path) -> Path:
    """Rebuild a finished run's model from its config and checkpoint; draw its test split."""
    run_dir = Path(run_dir)
    if not (run_dir / "checkpoint.pt").exists():
        raise HarnessError(f"{run_dir} holds no checkpoint.pt; pictures need a trained run folder")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    dataset = build_dataset(cfg)
    protocol = protocol_of(cfg)
    state = protocol.prepare(cfg, dataset, torch.device("cpu"))
    algo = build_algorithm(cfg, dataset, protocol, state)
    algo.load_checkpoint_state(load_torch(run_dir / "checkpoint.pt")["algorithm"])
    algo.eval()
    return protocol.pictures(algo, dataset.splits["test"], Path(path))
