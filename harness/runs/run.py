"""One run: build the dataset, groups and algorithm from a resolved config; train for a step
budget; evaluate every ``eval_every`` steps; write a run folder that can be resumed.

The run folder holds:
    config.yaml       the resolved config (its hash names the folder)
    info.json         the protocol and what it needs to recompute metrics from predictions
    results.jsonl     one line per evaluation: metrics of every split, mean training logs
    predictions/      step_XXXXXXX.npz per evaluation: the protocol's arrays of every split
    manifest.json     the sha256 of each predictions file, recorded when it is written
    checkpoint.pt     model, optimizer, step and RNG state at the last evaluation
    summary.json      the checkpoint each selection rule picks and its test metrics
    done              written last
"""
from __future__ import annotations

import functools
import json
import pickle
import random
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.core import config as configs
from harness.core import files
from harness.core.errors import HarnessError, RunDiverged, unknown
from harness.core.registry import ALGORITHMS, DATASETS, PROTOCOLS, trial_kind
from harness.core.version import code_version
from harness.data.dataset import ShiftDataset, batch_indices
from harness.models.algorithm import Algorithm, HeldOut
from harness.models.backbones import backbone_factory, parameter_count
from harness.protocols.base import Protocol
from harness.protocols.base import protocol as get_protocol
from harness.protocols.selection import select
from harness.runs import distributed, features, manifest
from harness.runs.hardware import pick_device, pick_threads

CHECKPOINT = "checkpoint.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_dataset(cfg: dict[str, Any]) -> ShiftDataset:
    dataset = DATASETS.get(cfg["dataset"]["name"]).obj(**cfg["dataset"]["options"])
    if cfg["features"]:
        dataset = features.apply(cfg["features"], dataset, Path(cfg["output_dir"]) / "feature_cache")
    return dataset


def build_algorithm(cfg: dict[str, Any], dataset: ShiftDataset, protocol: Protocol, state: Any) -> Algorithm:
    entry = ALGORITHMS.get(cfg["algorithm"]["name"])
    entry.obj.check_run(cfg["algorithm"]["hparams"], cfg["steps"])
    name = cfg["backbone"]["name"]
    factory = backbone_factory(dataset.default_backbone if name == "auto" else name,
                               dataset.input_shape, cfg["backbone"]["options"])
    torch.manual_seed(cfg["seed"])
    return protocol.build(entry.obj, factory, cfg, dataset, state)


def parameters(cfg: dict[str, Any], dataset: ShiftDataset, algo: Algorithm) -> dict[str, int]:
    """Parameter counts: the configured backbone's (one of it; twin methods build several), and
    the whole network's (backbone, heads, projector, probes): total and trainable."""
    name = cfg["backbone"]["name"]
    backbone = parameter_count(dataset.default_backbone if name == "auto" else name, dataset.input_shape,
                               cfg["backbone"]["options"])
    return {"backbone": backbone, "total": sum(p.numel() for p in algo.parameters()),
            "trainable": sum(p.numel() for p in algo.parameters() if p.requires_grad)}


def evaluation_plan(cfg: dict[str, Any], protocol: Protocol, algo: Algorithm,
                    dataset: ShiftDataset) -> dict[str, torch.Tensor | None]:
    """The splits a run evaluates (``eval_splits``; auto: the algorithm's, else the protocol's),
    each with the positions it evaluates: None for all, or for the train split a subset of
    ``eval_train_size`` examples (auto: the protocol's), drawn once from the run's seed."""
    names = cfg["eval_splits"]
    if names == "auto":
        names = protocol.splits if algo.evaluates is None else algo.evaluates
    for name in names:
        if name not in protocol.splits:
            raise unknown(f"split of protocol {protocol.name} (eval_splits)", name, list(protocol.splits))
    size = protocol.train_eval_size if cfg["eval_train_size"] == "auto" else cfg["eval_train_size"]
    plan: dict[str, torch.Tensor | None] = {}
    for name in dict.fromkeys(names):
        n = len(dataset.splits[name])
        subset = name == "train" and 0 < size < n
        plan[name] = (torch.from_numpy(np.sort(np.random.RandomState(cfg["seed"]).choice(n, size, replace=False)))
                      if subset else None)
    return plan


def protocol_of(cfg: dict[str, Any]) -> Protocol:
    """The protocol the run's algorithm is written for."""
    return get_protocol(ALGORITHMS.get(cfg["algorithm"]["name"]).obj.protocol)


def check_trainable(cfg: dict[str, Any], protocol: Protocol) -> None:
    """The run's algorithm is trained by the loop (its protocol trains)."""
    if not protocol.trains:
        training = ", ".join(n for n in PROTOCOLS.names() if PROTOCOLS.get(n).obj.trains)
        raise HarnessError(f"algorithm {cfg['algorithm']['name']!r} is written for the {protocol.name} protocol, whose "
                           f"runs another trial kind writes, not the training loop; the loop trains algorithms of "
                           f"the {training} protocols")


def check_data(cfg: dict[str, Any], protocol: Protocol, dataset: ShiftDataset | DataFacts) -> None:
    """The dataset suits the run: a batch no larger than the training split it is drawn from,
    unlabelled examples only for a protocol that accepts them."""
    facts = dataset if isinstance(dataset, DataFacts) else DataFacts.of(dataset)
    batch = cfg["algorithm"]["hparams"].get("batch_size")
    if isinstance(batch, int) and batch > facts.train_size:
        raise HarnessError(f"algorithm.hparams.batch_size {batch} is larger than the training split of dataset "
                           f"{cfg['dataset']['name']!r} ({facts.train_size} examples); accepted: at most "
                           f"{facts.train_size}")
    if facts.unlabelled and not protocol.unlabelled_ok:
        accepting = ", ".join(n for n in PROTOCOLS.names() if PROTOCOLS.get(n).obj.unlabelled_ok)
        raise HarnessError(f"dataset {cfg['dataset']['name']!r} has {facts.unlabelled} unlabelled examples, which "
                           f"the {protocol.name} protocol of {cfg['algorithm']['name']!r} cannot train on; "
                           f"accepted: an algorithm of the {accepting} protocol (`harness list algorithms`)")


@dataclass(frozen=True)
class DataFacts:
    """What checks read of a dataset: the size of its training split, its unlabelled examples."""

    train_size: int
    unlabelled: int

    @classmethod
    def of(cls, dataset: ShiftDataset) -> DataFacts:
        return cls(len(dataset.splits["train"]), int(dataset.unlabelled))


@functools.lru_cache(maxsize=None)
def _facts(key: str) -> DataFacts:
    name, options = json.loads(key)
    return DataFacts.of(DATASETS.get(name).obj(**options))


def checked_dataset(cfg: dict[str, Any]) -> DataFacts:
    """The config's dataset as checks see it, no features applied (they change neither the
    splits' sizes nor the labels, and cost a network)."""
    return dataset_facts(cfg["dataset"]["name"], cfg["dataset"]["options"])


def dataset_facts(name: str, options: dict[str, Any]) -> DataFacts:
    """The facts of dataset ``name`` with ``options``, the dataset built once per process for them."""
    return _facts(json.dumps([name, options], sort_keys=True))


def check_train(cfg: dict[str, Any]) -> None:
    """What ``train`` refuses before its folder exists: an algorithm the loop does not train,
    hyperparameters the run cannot honour, unlabelled data its protocol cannot train on."""
    protocol = protocol_of(cfg)
    check_trainable(cfg, protocol)
    ALGORITHMS.get(cfg["algorithm"]["name"]).obj.check_run(cfg["algorithm"]["hparams"], cfg["steps"])
    check_data(cfg, protocol, checked_dataset(cfg))


@trial_kind("train", done_files=("done",), check=check_train)
def train(cfg: dict[str, Any], progress: bool | None = None) -> Path:
    """Train (or resume, or skip if done) the run described by the resolved config ``cfg``."""
    out = configs.run_dir(cfg)
    if (out / "done").exists():
        return out
    seed_everything(cfg["seed"])
    device = distributed.join(pick_device(cfg["device"]))
    threads = pick_threads(cfg["threads"])
    torch.set_num_threads(threads)
    rank, world = distributed.rank_and_world()
    if device.type == "cpu":
        # Adam's moments of parameters whose gradients vanish (dead ReLUs) decay geometrically
        # into subnormal floats, which x86 CPUs handle slowly: an XRM run measured 4.6x slower
        # (136 s against 29 s) without this. Flushing them to zero changes nothing that matters.
        torch.set_flush_denormal(True)
    protocol = protocol_of(cfg)
    check_trainable(cfg, protocol)
    dataset = build_dataset(cfg)
    check_data(cfg, protocol, dataset)
    state = protocol.prepare(cfg, dataset, device)
    held_out = None
    if ALGORITHMS.get(cfg["algorithm"]["name"]).obj.holds_out_validation:
        held_out = protocol.hold_out(dataset, state, cfg["seed"])  # validation keeps the other half
    algo = build_algorithm(cfg, dataset, protocol, state).to(device)
    if held_out is not None:
        algo.held_out = HeldOut(held_out.split.to(device), held_out.g.to(device), held_out.seed)
    algo.amp = bool(cfg["amp"])
    if world > 1:
        _check_data_parallel(cfg, algo, world)
        algo.grad_sync = distributed.average_gradients
        seed_everything(cfg["seed"] * 1000 + rank)  # same initial weights (built above), own draws per rank
    plan = evaluation_plan(cfg, protocol, algo, dataset)
    if rank == 0:
        claim(out, cfg)  # only once the inputs are known to be good: bad input leaves no folder
    info = {"hash": configs.config_hash(cfg), "protocol": protocol.name, **protocol.info(cfg, dataset, state),
            "split_sizes": {s: len(dataset.splits[s]) for s in protocol.splits}, "metadata": dataset.metadata_info(),
            "dataset_info": dataset.info, "code_version": code_version(),
            "parameters": parameters(cfg, dataset, algo), "threads": threads, "device": device.type,
            "evaluated": {s: len(dataset.splits[s]) if p is None else len(p) for s, p in plan.items()}}
    if held_out is not None:  # which validation examples the algorithm fitted on; selection never reads them
        info["held_out"] = {"split": "val", "ids": held_out.split.ids.tolist()}
    if rank == 0:
        files.write_json(out / "info.json", info)
    distributed.barrier()
    Run(cfg, out, dataset, protocol, state, info, algo, device, plan).fit(progress)
    return out


class RepairedRowWarning(UserWarning):
    """A result row lost or damaged, made again from its stored predictions on resume."""


def evaluation_steps(steps: int, eval_every: int, upto: int) -> list[int]:
    """The steps a run evaluates at (every ``eval_every`` and the last), up to ``upto``."""
    return [s for s in range(1, min(steps, upto) + 1) if s % eval_every == 0 or s == steps]


def _check_data_parallel(cfg: dict[str, Any], algo: Algorithm, world: int) -> None:
    name, batch_size = cfg["algorithm"]["name"], cfg["algorithm"]["hparams"]["batch_size"]
    if not algo.data_parallel:
        raise HarnessError(f"algorithm {name!r} does not run data-parallel (WORLD_SIZE={world}); "
                           "run it in one process")
    if batch_size % world:
        raise HarnessError(f"batch_size {batch_size} (the global batch) is not divisible by WORLD_SIZE={world}")


def claim(out: Path, cfg: dict[str, Any]) -> None:
    """Create the folder with its config, or check that an existing one is for the same run."""
    saved = out / "config.yaml"
    if saved.exists():
        previous = files.read_yaml_mapping(saved, "run config")
        if configs.config_hash(previous) != configs.config_hash(cfg):
            raise HarnessError(f"run folder {str(out)!r} holds a different config; "
                               "choose another run_dir or remove that folder")
    out.mkdir(parents=True, exist_ok=True)
    files.write_text(saved, configs.dump(cfg))


class Run:
    """The training loop over one run folder; what it trains on, stores and logs is the protocol's."""

    def __init__(self, cfg: dict[str, Any], out: Path, dataset: ShiftDataset, protocol: Protocol, state: Any,
                 info: dict[str, Any], algo: Algorithm, device: torch.device,
                 plan: dict[str, torch.Tensor | None]):
        self.cfg, self.out, self.protocol, self.state, self.info = cfg, out, protocol, state, info
        self.algo, self.device = algo, device
        self.splits = {s: dataset.splits[s].to(device) for s in protocol.splits}
        # what each evaluation records: (split, state) per evaluated split, cut to its positions
        self.evaluated = {s: (self.splits[s], state) if p is None else protocol.restrict(s, self.splits[s], state, p)
                          for s, p in plan.items()}
        positions, weights = protocol.sampling(algo, dataset, state)
        self.positions = (torch.arange(len(dataset.splits["train"])) if positions is None else positions).to(device)
        self.weights = weights
        self.checkpoint_path = out / CHECKPOINT
        self.results_path = out / "results.jsonl"
        self.manifest: dict[str, str] = {}
        self.rank, self.world = distributed.rank_and_world()

    def fit(self, progress: bool | None) -> None:
        cfg, algo = self.cfg, self.algo
        steps, batch_size, seed = cfg["steps"], cfg["algorithm"]["hparams"]["batch_size"], cfg["seed"]
        start, rows = self._resume()
        train = self.splits["train"]
        show = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(total=steps, initial=start, disable=not show or self.rank > 0, desc=self.out.name, unit="step",
                   leave=False)
        sums: dict[str, torch.Tensor] = {}
        count, clock = 0, time.perf_counter()
        algo.train()
        for step in range(start, steps):
            pos = self.positions[batch_indices(len(self.positions), batch_size, step, seed, self.weights)
                                 .to(self.device)]
            if self.world > 1:
                pos = pos.tensor_split(self.world)[self.rank]  # this rank's slice of the global batch
            for key, value in algo.update(self.protocol.batch(train, pos, self.state), step).items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            bar.update(1)
            if (step + 1) % cfg["eval_every"] == 0 or step + 1 == steps:
                train_seconds = time.perf_counter() - clock
                logs = {k: float(v) / count for k, v in sums.items()}
                rngs = None
                if self.world > 1:
                    logs = distributed.mean_over_ranks(logs)
                    rngs = distributed.gather_objects(_rng_state())
                if self.rank == 0:
                    row = self._evaluate(step + 1, logs, train_seconds)
                    rows.append(row)
                    self._save(step + 1, rows, rngs)
                    bar.set_postfix({key: _fmt(row["metrics"].get(key.split(".")[0], {}).get(key.split(".")[1]))
                                     for key in self.protocol.progress})
                distributed.barrier()
                sums, count, clock = {}, 0, time.perf_counter()
        bar.close()
        if self.rank == 0:
            files.write_text(self.out / "done", time.strftime("%Y-%m-%dT%H:%M:%S\n"))
        distributed.barrier()

    def _resume(self) -> tuple[int, list[dict]]:
        """Restore the last checkpoint; drop result rows written after it (a kill may land
        between writing results and writing the checkpoint). An unreadable checkpoint (a disk
        that filled up, a copy cut short) restarts the run from step 0, with a warning."""
        state = read_checkpoint(self.checkpoint_path)
        if state is None:
            if self.rank > 0:
                return 0, []
            shutil.rmtree(self.out / "predictions", ignore_errors=True)
            (self.out / manifest.MANIFEST).unlink(missing_ok=True)
            files.write_jsonl(self.results_path, [])
            return 0, []
        self.algo.load_checkpoint_state(state["algorithm"])
        ranks = state.get("rng_ranks") or []
        rng = ranks[self.rank] if len(ranks) == self.world else state["rng"]
        torch.set_rng_state(rng["torch"])
        if torch.cuda.is_available() and rng.get("cuda"):
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(_np_state(rng["numpy"]))
        random.setstate(_py_state(rng["python"]))
        if self.rank > 0:
            return state["step"], []
        self.manifest = {name: digest for name, digest in manifest.read(self.out).items()
                         if int(name[len("step_"):-len(".npz")]) <= state["step"]}
        rows = self._repaired_rows(state)
        files.write_jsonl(self.results_path, rows)
        return state["step"], rows

    def _repaired_rows(self, state: dict[str, Any]) -> list[dict]:
        """The result rows up to the checkpoint's step, one per evaluation: those read intact, and
        any lost (a kill after the checkpoint's predictions, before or during the row's append) or
        damaged (a line that is not a row) made again from the stored predictions of that step by
        the protocol's ``scores`` (the function that made it), with the training logs the
        checkpoint kept. An evaluation whose predictions are missing or altered cannot be made
        again: a HarnessError naming it."""
        intact = {r["step"]: r for r in files.read_rows(self.results_path)
                  if isinstance(r.get("step"), int) and isinstance(r.get("metrics"), dict) and r["step"] <= state["step"]}
        logs = state.get("logs") or {}
        rows = []
        for step in evaluation_steps(self.cfg["steps"], self.cfg["eval_every"], state["step"]):
            if step in intact:
                rows.append(intact[step])
                continue
            path = self.out / "predictions" / f"step_{step:07d}.npz"
            if not path.exists() or self.manifest.get(path.name) != files.sha256(path):
                raise HarnessError(f"{self.results_path}: the row of step {step} is lost and its predictions "
                                   f"({path.name}) are missing or altered, so it cannot be made again; remove the run "
                                   f"folder {str(self.out)!r} and rerun its command")
            kept = logs.get(str(step), {})
            warnings.warn(f"{self.results_path}: the row of step {step} was lost or damaged; made again from "
                          f"{path.name}", RepairedRowWarning, stacklevel=2)
            rows.append({"step": step, "train_logs": kept.get("train_logs", {}),
                         "train_seconds": kept.get("train_seconds"),
                         "metrics": self.protocol.scores(files.load_arrays(path), self.info)})
        return rows

    @torch.no_grad()
    def _evaluate(self, step: int, train_logs: dict[str, float], train_seconds: float) -> dict:
        """Store the protocol's arrays of every evaluated split, then log the metrics the protocol
        computes from exactly those arrays (the same function collect and verify call)."""
        self.algo.eval()
        self.algo.before_evaluation()
        arrays = {f"{name}.{key}": value for name, (split, state) in self.evaluated.items()
                  for key, value in self.protocol.record(self.algo, name, split, state,
                                                         self.cfg["eval_batch_size"]).items()}
        _check_finite(step, train_logs, arrays)
        path = self.out / "predictions" / f"step_{step:07d}.npz"
        files.save_arrays(path, **arrays)
        manifest.record(self.out, self.manifest, path)
        self.algo.train()
        return {"step": step, "train_logs": train_logs, "train_seconds": train_seconds,
                "metrics": self.protocol.scores(arrays, self.info)}

    def _save(self, step: int, rows: list[dict], rngs: list[dict] | None = None) -> None:
        """Results first, then the checkpoint: a kill in between is repaired by ``_resume``.
        ``rngs``: every rank's RNG state in a data-parallel run."""
        with open(self.results_path, "a") as fh:
            fh.write(json.dumps(rows[-1], sort_keys=True) + "\n")
        # the training logs of every evaluation: what a lost row's stored predictions do not hold
        logs = {str(r["step"]): {"train_logs": r["train_logs"], "train_seconds": r["train_seconds"]} for r in rows}
        state = {"step": step, "algorithm": self.algo.checkpoint_state(), "rng": _rng_state(), "logs": logs}
        if rngs:
            state["rng_ranks"] = rngs
        files.save_torch(self.checkpoint_path, state)
        files.write_json(self.out / "summary.json", summarize(self.protocol, rows))


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": _np_plain(np.random.get_state()),
            "python": _py_plain(random.getstate()),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _check_finite(step: int, train_logs: dict[str, float], arrays: dict[str, np.ndarray]) -> None:
    """A RunDiverged naming what became nan or inf by ``step``; called before anything of that
    evaluation is stored, so the run folder keeps its last good checkpoint."""
    bad = [f"training {k} {v}" for k, v in train_logs.items() if not np.isfinite(v)]
    bad += [f"{k} ({int((~np.isfinite(a)).sum())} values)" for k, a in arrays.items()
            if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all()]
    if bad:
        raise RunDiverged(f"non-finite values by step {step}: {', '.join(bad)}; lower the learning rate "
                          "or check the hyperparameters")


class CheckpointWarning(UserWarning):
    """A run's checkpoint could not be read; the run restarts from step 0."""


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``; None if there is none, or (with a CheckpointWarning, and the
    file removed) if it cannot be read."""
    if not path.exists():
        return None
    try:
        state = files.load_torch(path)
        int(state["step"])
        return state
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as exc:
        warnings.warn(f"{path}: unreadable checkpoint ({str(exc)[:100]}); removed, the run restarts from step 0",
                      CheckpointWarning, stacklevel=2)
        path.unlink()
        return None


def summarize(protocol: Protocol, rows: list[dict]) -> dict[str, Any]:
    """For each selection rule the run can answer: the chosen step and its test metrics."""
    summary = {}
    for rule in protocol.rules:
        row = select(rows, rule)
        if row is not None:
            test = row["metrics"].get("test", {})
            summary[rule.name] = {"step": row["step"], **{k: test[k] for k in protocol.metrics
                                                          if isinstance(test.get(k), (int, float))}}
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
