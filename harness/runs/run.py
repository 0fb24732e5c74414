"""One run: build the dataset, groups and algorithm from a resolved config; train for a step
budget; evaluate every ``eval_every`` steps; write a run folder that can be resumed.

The run folder holds:
    config.yaml       the resolved config (its hash names the folder)
    info.json         what is needed to recompute metrics from predictions (classes, groups, weights)
    results.jsonl     one line per evaluation: metrics of every split, mean training logs
    predictions/      step_XXXXXXX.npz per evaluation: ids, labels, attributes, groups, probabilities
    checkpoint.pt     model, optimizer, step and RNG state at the last evaluation
    summary.json      the checkpoint each selection rule picks and its test metrics
    done              written last
"""
from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.core import config as configs
from harness.core import files
from harness.core.errors import HarnessError
from harness.core.registry import ALGORITHMS, DATASETS, trial_kind
from harness.data.dataset import ShiftDataset, batch_indices, chunks
from harness.data.groups import GroupAssignment, resolve_groups
from harness.models.algorithm import Algorithm, Batch
from harness.models.backbones import backbone_factory
from harness.protocols.classification import classification_metrics
from harness.protocols.selection import RULES, select

EVAL_SPLITS = ("train", "val", "test")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise HarnessError(f"device {name!r} is not a torch device; accepted: auto, cpu, cuda, cuda:N") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_dataset(cfg: dict[str, Any]) -> ShiftDataset:
    dataset = DATASETS.get(cfg["dataset"]["name"]).obj(**cfg["dataset"]["options"])
    if cfg["features"]:
        from harness.runs import features
        dataset = features.apply(cfg["features"], dataset, Path(cfg["output_dir"]) / "feature_cache")
    return dataset


def build_algorithm(cfg: dict[str, Any], dataset: ShiftDataset, groups: GroupAssignment) -> Algorithm:
    entry = ALGORITHMS.get(cfg["algorithm"]["name"])
    if entry.obj.needs_groups and groups.num_groups == 0:
        raise HarnessError(f"algorithm {entry.name!r} trains on groups, but groups is 'none'; "
                           "accepted: annotated, classes or inferred:<discovery run folder>")
    entry.obj.check_run(cfg["algorithm"]["hparams"], cfg["steps"])
    name = cfg["backbone"]["name"]
    factory = backbone_factory(dataset.default_backbone if name == "auto" else name,
                               dataset.input_shape, cfg["backbone"]["options"])
    torch.manual_seed(cfg["seed"])
    return entry.obj(factory, dataset.num_classes, groups.num_groups, cfg["algorithm"]["hparams"],
                     len(dataset.splits["train"]))


@trial_kind("train", done_files=("done",))
def train(cfg: dict[str, Any], progress: bool | None = None) -> Path:
    """Train (or resume, or skip if done) the run described by the resolved config ``cfg``."""
    out = configs.run_dir(cfg)
    if (out / "done").exists():
        return out
    seed_everything(cfg["seed"])
    device = pick_device(cfg["device"])
    if device.type == "cpu":
        # Adam's moments of parameters whose gradients vanish (dead ReLUs) decay geometrically
        # into subnormal floats, which x86 CPUs handle slowly: an XRM run measured 4.6x slower
        # (136 s against 29 s) without this. Flushing them to zero changes nothing that matters.
        torch.set_flush_denormal(True)
    dataset = build_dataset(cfg)
    groups = resolve_groups(cfg["groups"], dataset)
    algo = build_algorithm(cfg, dataset, groups).to(device)
    algo.amp = bool(cfg["amp"])
    _claim(out, cfg)  # only once the inputs are known to be good: bad input leaves no folder
    files.write_json(out / "info.json", _info(cfg, dataset, groups))
    Run(cfg, out, dataset, groups, algo, device).fit(progress)
    return out


def _claim(out: Path, cfg: dict[str, Any]) -> None:
    """Create the folder with its config, or check that an existing one is for the same run."""
    saved = out / "config.yaml"
    if saved.exists():
        import yaml
        previous = yaml.safe_load(saved.read_text())
        if configs.config_hash(previous) != configs.config_hash(cfg):
            raise HarnessError(f"run folder {str(out)!r} holds a different config; "
                               "choose another run_dir or remove that folder")
    out.mkdir(parents=True, exist_ok=True)
    files.write_text(saved, configs.dump(cfg))


def _info(cfg: dict[str, Any], dataset: ShiftDataset, groups: GroupAssignment) -> dict[str, Any]:
    return {
        "hash": configs.config_hash(cfg),
        "num_classes": dataset.num_classes,
        "class_names": list(dataset.class_names),
        "attr_name": dataset.attr_name,
        "attr_values": list(dataset.attr_values),
        "num_groups": dataset.num_groups if dataset.annotated else 0,
        "group_names": dataset.group_names() if dataset.annotated else [],
        "group_weights": list(dataset.group_weights) if dataset.group_weights else None,
        "group_source": groups.source,
        "source_num_groups": groups.num_groups,
        "source_group_names": groups.names,
        "source_info": groups.info,
        "split_sizes": {s: len(dataset.splits[s]) for s in EVAL_SPLITS},
        "dataset_info": dataset.info,
    }


class Run:
    """The training loop over one run folder."""

    def __init__(self, cfg: dict[str, Any], out: Path, dataset: ShiftDataset, groups: GroupAssignment,
                 algo: Algorithm, device: torch.device):
        self.cfg, self.out, self.dataset, self.groups, self.algo, self.device = cfg, out, dataset, groups, algo, device
        self.splits = {s: sp.to(device) for s, sp in dataset.splits.items()}
        self.source_groups = {s: g.to(device) for s, g in groups.by_split.items()}
        self.annotated_groups = {s: dataset.annotated_groups(s).numpy() for s in EVAL_SPLITS}
        positions, weights = algo.sampling(dataset.splits["train"].y, groups.by_split["train"])
        self.positions = (torch.arange(len(dataset.splits["train"])) if positions is None else positions).to(device)
        self.weights = weights
        self.checkpoint_path = out / "checkpoint.pt"
        self.results_path = out / "results.jsonl"

    def fit(self, progress: bool | None) -> None:
        cfg, algo = self.cfg, self.algo
        steps, batch_size, seed = cfg["steps"], cfg["algorithm"]["hparams"]["batch_size"], cfg["seed"]
        start, rows = self._resume()
        train = self.splits["train"]
        show = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(total=steps, initial=start, disable=not show, desc=self.out.name, unit="step", leave=False)
        sums: dict[str, torch.Tensor] = {}
        count, clock = 0, time.perf_counter()
        algo.train()
        for step in range(start, steps):
            pos = self.positions[batch_indices(len(self.positions), batch_size, step, seed, self.weights)
                                 .to(self.device)]
            batch = Batch(train.inputs(pos), train.y[pos], self.source_groups["train"][pos], pos)
            for key, value in algo.update(batch, step).items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            bar.update(1)
            if (step + 1) % cfg["eval_every"] == 0 or step + 1 == steps:
                train_seconds = time.perf_counter() - clock
                row = self._evaluate(step + 1, {k: float(v) / count for k, v in sums.items()}, train_seconds)
                rows.append(row)
                self._save(step + 1, rows)
                bar.set_postfix(val_wga=_fmt(row["metrics"]["val"].get("worst_group_acc")),
                                test_wga=_fmt(row["metrics"]["test"].get("worst_group_acc")))
                sums, count, clock = {}, 0, time.perf_counter()
        bar.close()
        files.write_text(self.out / "done", time.strftime("%Y-%m-%dT%H:%M:%S\n"))

    def _resume(self) -> tuple[int, list[dict]]:
        """Restore the last checkpoint; drop result rows written after it (a kill may land
        between writing results and writing the checkpoint)."""
        if not self.checkpoint_path.exists():
            files.write_jsonl(self.results_path, [])
            return 0, []
        state = files.load_torch(self.checkpoint_path)
        self.algo.load_checkpoint_state(state["algorithm"])
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available() and state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        np.random.set_state(_np_state(state["rng"]["numpy"]))
        random.setstate(_py_state(state["rng"]["python"]))
        rows = [r for r in files.read_jsonl(self.results_path) if r["step"] <= state["step"]]
        files.write_jsonl(self.results_path, rows)
        return state["step"], rows

    @torch.no_grad()
    def _evaluate(self, step: int, train_logs: dict[str, float], train_seconds: float) -> dict:
        self.algo.eval()
        metrics, arrays = {}, {}
        for name in EVAL_SPLITS:
            split = self.splits[name]
            probs = torch.cat([torch.softmax(self.algo.predict(split.inputs(idx.to(self.device))), 1).cpu()
                               for idx in chunks(len(split), self.cfg["eval_batch_size"])]).numpy()
            y = split.y.cpu().numpy()
            annotated = self.annotated_groups[name]
            m = classification_metrics(y, probs, annotated, self.dataset.num_groups if self.dataset.annotated else 0,
                                       self.dataset.num_classes, self.dataset.group_weights)
            source = self.source_groups.get(name)
            source_np = source.cpu().numpy() if source is not None else np.full_like(y, -1)
            if source is not None and self.groups.source != "annotated" and self.groups.num_groups:
                s = classification_metrics(y, probs, source_np, self.groups.num_groups, self.dataset.num_classes)
                m["source_worst_group_acc"], m["source_group_acc"] = s["worst_group_acc"], s["group_acc"]
            metrics[name] = m
            arrays.update({f"{name}.ids": split.ids.cpu().numpy(), f"{name}.y": y,
                           f"{name}.attr": annotated, f"{name}.group": source_np,
                           f"{name}.probs": probs.astype(np.float32)})
        files.save_arrays(self.out / "predictions" / f"step_{step:07d}.npz", **arrays)
        self.algo.train()
        return {"step": step, "train_logs": train_logs, "train_seconds": train_seconds, "metrics": metrics}

    def _save(self, step: int, rows: list[dict]) -> None:
        """Results first, then the checkpoint: a kill in between is repaired by ``_resume``."""
        with open(self.results_path, "a") as fh:
            fh.write(json.dumps(rows[-1], sort_keys=True) + "\n")
        rng = {"torch": torch.get_rng_state(), "numpy": _np_plain(np.random.get_state()),
               "python": _py_plain(random.getstate()),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        files.save_torch(self.checkpoint_path, {"step": step, "algorithm": self.algo.checkpoint_state(), "rng": rng})
        files.write_json(self.out / "summary.json", summarize(rows))


def summarize(rows: list[dict]) -> dict[str, Any]:
    """For each selection rule the run can answer: the chosen step and its test metrics."""
    summary = {}
    for rule in RULES:
        row = select(rows, rule)
        if row is not None:
            test = row["metrics"]["test"]
            summary[rule] = {"step": row["step"],
                             **{k: test.get(k) for k in ("avg_acc", "worst_group_acc", "worst_class_acc",
                                                         "adjusted_avg_acc") if k in test}}
    return summary


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# RNG states stored as plain tensors and lists, so that the checkpoint loads with weights_only=True.
def _np_plain(state: tuple) -> list:
    return [state[0], torch.from_numpy(state[1].astype(np.int64)), *state[2:]]


def _np_state(plain: list) -> tuple:
    return (plain[0], plain[1].numpy().astype(np.uint32), *plain[2:])


def _py_plain(state: tuple) -> list:
    return [state[0], list(state[1]), state[2]]


def _py_state(plain: list) -> tuple:
    return (plain[0], tuple(plain[1]), plain[2])
