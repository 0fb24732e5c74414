"""A trained run rebuilt from its config: the dataset, the protocol and its state, and the
algorithm with the run's last checkpoint loaded (or as the seed initialises it), in eval mode.

What discovery needs to infer environments after training, what pictures draw, and what a
probe reads: one recipe, so that the three cannot rebuild a run three slightly different ways.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.core import config as configs
from harness.core import files
from harness.core.errors import HarnessError
from harness.data.dataset import ShiftDataset
from harness.models.algorithm import Algorithm
from harness.protocols.base import Protocol
from harness.runs.run import CHECKPOINT, build_algorithm, build_dataset, protocol_of


@dataclass
class Trained:
    """A run's pieces, rebuilt: its resolved config, dataset, protocol, the protocol's state
    (``prepare``: worst-group's groups) and the algorithm, on ``device`` and in eval mode."""

    cfg: dict[str, Any]
    dataset: ShiftDataset
    protocol: Protocol
    state: Any
    algorithm: Algorithm
    run_dir: Path | None


def load_trained(run: str | Path | dict[str, Any], device: torch.device, checkpoint: bool = True) -> Trained:
    """Rebuild a run from its folder (``run``: the folder, whose ``config.yaml`` is read) or from
    its resolved config (the folder the config names). ``checkpoint``: load the run's last
    checkpoint (a folder without one is a HarnessError); False: the algorithm as the config's
    seed initialises it, untrained (no folder is read)."""
    if isinstance(run, dict):
        cfg, run_dir = run, configs.run_dir(run) if checkpoint else None
    else:
        run_dir = Path(run)
        if not (run_dir / "config.yaml").exists():
            raise HarnessError(f"{str(run_dir)!r} holds no config.yaml; give a run folder")
        cfg = files.read_yaml_mapping(run_dir / "config.yaml", "run config")
    dataset = build_dataset(cfg)
    protocol = protocol_of(cfg)
    state = protocol.prepare(cfg, dataset, device)
    algo = build_algorithm(cfg, dataset, protocol, state).to(device)
    algo.amp = bool(cfg["amp"])
    if checkpoint:
        if run_dir is None or not (run_dir / CHECKPOINT).exists():
            raise HarnessError(f"{run_dir} holds no {CHECKPOINT}; a trained run folder is needed")
        algo.load_checkpoint_state(files.load_torch(run_dir / CHECKPOINT)["algorithm"])
    algo.eval()
    return Trained(cfg, dataset, protocol, state, algo, run_dir)


# What a config holds that does not change its network's layers.
NOT_NETWORK = ("seed", "run_dir", "output_dir", "arm")


@dataclass(frozen=True)
class NetworkFacts:
    """What checks read of a run's network (``probe_network()``): its layers, its input shape."""

    layer_names: list[str]
    layer_dims: dict[str, int]
    input_shape: tuple[int, ...]


@functools.lru_cache(maxsize=None)
def _facts(key: str) -> NetworkFacts:
    built = load_trained(json.loads(key), torch.device("cpu"), checkpoint=False)
    net = built.algorithm.probe_network()
    return NetworkFacts(list(net.layer_names), dict(net.layer_dims), tuple(built.dataset.input_shape))


def network_facts(cfg: dict[str, Any]) -> NetworkFacts:
    """The layers and input shape of the network of ``cfg`` (built untrained on the CPU), once
    per process for configs that differ only in their seed or folder: what checks read."""
    return _facts(json.dumps({k: v for k, v in cfg.items() if k not in NOT_NETWORK} | {"seed": 0, "run_dir": None,
                                                                                        "output_dir": "."},
                             sort_keys=True, default=str))
