"""The pretraining protocol: a network trained on inputs alone (or on labels, for supervised
pretraining), monitored as it trains, and later scored by ``probe`` trials (transfer protocol).

Any registered dataset serves as pretraining data: the objective reads its inputs; labels reach
only the online probe (a linear head on detached backbone features, ``harness.models.pretrain``)
and the supervised method. Per split and evaluation a run stores the example ids, labels, the
online probe's predicted classes and the singular values of the split's backbone embeddings;
:meth:`Pretraining.scores` gives the online probe's accuracy on the held-out splits and RankMe.
The training loss is in each results row's ``train_logs``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from harness.core.registry import PROTOCOLS
from harness.data.dataset import ShiftDataset, Split, chunks
from harness.models.algorithm import Batch
from harness.models.representation import rankme, spectrum
from harness.protocols.base import Display, Protocol, Rule


@PROTOCOLS.register("pretraining")
class Pretraining(Protocol):
    """Pretraining monitored by an online linear probe and RankMe; scored downstream by probe trials."""

    metrics = {"probe_acc": Display("online probe acc"), "rankme": Display("RankMe", percent=False, precision=1)}
    rules = (Rule("val-probe", "val", "probe_acc", needs="validation labels"),
             Rule("val-rankme", "val", "rankme", needs="nothing: validation inputs only"),
             Rule("oracle", "test", "probe_acc", needs="test labels (an upper bound, not a result)"))
    reported = ("test.probe_acc", "test.rankme")
    unlabelled_ok = True
    progress = ("val.probe_acc", "val.rankme")

    def build(self, algorithm: type, backbone: Callable[[], nn.Module], cfg: dict[str, Any],
              dataset: ShiftDataset, state: Any) -> nn.Module:
        return algorithm(backbone, dataset.num_classes, dataset.input_shape, cfg["algorithm"]["hparams"],
                         len(dataset.splits["train"]))

    def batch(self, split: Split, positions: torch.Tensor, state: Any) -> Batch:
        return Batch(split.inputs(positions), split.y[positions], torch.full_like(positions, -1), positions)

    @torch.no_grad()
    def record(self, algo: nn.Module, name: str, split: Split, state: Any, batch_size: int) -> dict[str, np.ndarray]:
        device = split.y.device
        embeddings, predicted = [], []
        for idx in chunks(len(split), batch_size):
            h = algo.featurizer(split.inputs(idx.to(device))).float()
            embeddings.append(h.cpu())
            predicted.append(algo.online(h).argmax(1).cpu())
        return {"ids": split.ids.cpu().numpy(), "y": split.y.cpu().numpy(),
                "probe": torch.cat(predicted).numpy(), "spectrum": spectrum(torch.cat(embeddings).numpy())}

    def scores(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> dict[str, dict[str, Any]]:
        out = {}
        for split in self.splits:
            if f"{split}.y" not in arrays:
                continue
            y, probe = arrays[f"{split}.y"], arrays[f"{split}.probe"]
            labelled = y >= 0
            out[split] = {"probe_acc": float((probe[labelled] == y[labelled]).mean()) if labelled.any() else None,
                          "rankme": rankme(arrays[f"{split}.spectrum"])}
        return out
