"""Probe trials: a frozen network probed at every named layer on downstream tasks (the
``transfer`` protocol's runs).

A run config with a ``probe`` section::

    probe: {tasks: [digits, {name: background_place, options: {n_train: 5000}}], init: trained,
            layers: [], cs: [1e-4, ..., 100], knn_k: 20, max_iter: 1000, batch_size: 256}

names the network by the rest of the config: ``init: trained`` reads the last checkpoint of the
pretraining run the same config describes without its ``probe`` section, in its own folder
beside the probe run (``output_dir/<its hash>``). A probe trial never trains: its kind declares
that run as the upstream trial it needs, which the planner (``harness sweep``, ``harness
probe``) runs first, once, under its own lock. ``init: random`` probes the same network as
initialised from the config's seed, untrained. The probed network is the algorithm's
``probe_network()``; ``layers`` (empty: all of its ``layer_names``).

For each task its dataset's inputs are fitted to the network's input shape, the features of
every layer come from one forward pass per batch (cached by network weights, layer and dataset:
``output_dir/feature_cache``), and each layer gets a logistic-regression probe with C chosen on
validation and a kNN (``harness.models.probes``). The run folder holds ``config.yaml``,
``info.json``, ``predictions/<task>/<layer>.npz`` (what the transfer protocol scores),
``cka.json`` (linear CKA between the layers, on each task's test split), ``spectrum.png``,
``cka.png`` and ``done`` (last).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.core import config as configs
from harness.core import figures, files
from harness.core.errors import HarnessError
from harness.core.options import Option, check_options
from harness.core.registry import TASKS, Need, config_section, trial_kind
from harness.core.version import code_version
from harness.data.tasks import fit_inputs, labels, task_dataset
from harness.models.backbones import check_layer
from harness.models.probes import DEFAULT_CS, probe_layer
from harness.models.representation import cka_matrix, rankme
from harness.protocols.transfer import PREDICTIONS
from harness.runs import features, manifest
from harness.runs.hardware import pick_device
from harness.runs.run import claim, dataset_facts
from harness.runs.trained import load_trained, network_facts

INITS = ("trained", "random")
TASK = Option(type=(Option(type=str, noun="downstream task"),
                    Option(type=dict, fields={"name": Option(type=str, required=True), "options": Option({}, dict)})))
OPTIONS: dict[str, Option] = {
    "tasks": Option([], list, "downstream tasks (`harness list tasks`)", items=TASK, non_empty=True, required=True),
    "init": Option("trained", str, choices=INITS),
    "layers": Option([], list, "([] for all)", items=Option(type=str, noun="layer name")),
    "cs": Option(list(DEFAULT_CS), list, "inverse regularisations of the logistic-regression probe",
                 items=Option(type=float, low=0, low_open=True), non_empty=True),
    "knn_k": Option(20, int, low=1),
    "max_iter": Option(1000, int, "Newton steps of the probe's solver at most, per C (about 10 are used)", low=1),
    "batch_size": Option(256, int, low=1),
}
NOT_HASHED = ("batch_size",)


def _task_item(item: str | dict[str, Any]) -> dict[str, Any]:
    """A checked task item as a mapping; an unknown task names the accepted ones."""
    item = {"name": item, "options": {}} if isinstance(item, str) else item
    TASKS.get(item["name"])
    return {"name": item["name"], "options": dict(item["options"])}


def hashed_part(spec: Any) -> Any:
    """What of a ``probe`` value enters the run's config hash: not how fast features are computed."""
    return {k: v for k, v in spec.items() if k not in NOT_HASHED} if isinstance(spec, dict) else spec


@config_section("probe", default=None, identity=hashed_part, hashed_when_default=False, read_by=("probe",))
def check_section(value: Any) -> dict[str, Any] | None:
    """Transfer probes of the configured network on downstream tasks (null: no probe)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise HarnessError(f"probe must be a mapping like {{tasks: [digits]}}, got {value!r}")
    spec = check_options("probe key", value, OPTIONS, prefix="probe.")
    spec["tasks"] = [_task_item(t) for t in spec["tasks"]]
    spec["cs"] = sorted(spec["cs"])
    return spec


def pretraining_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config of the run whose network a probe run reads: the same, without ``probe``,
    in its own folder of the same output_dir."""
    return {**copy.deepcopy(cfg), "probe": None, "run_dir": None}


def pretraining_needs(cfg: dict[str, Any]) -> list[Need]:
    """A probe of a trained network needs its pretraining run (a ``train`` trial)."""
    spec = cfg.get("probe")
    if spec is None or spec["init"] != "trained":
        return []
    return [Need("train", "pretraining", configs=(pretraining_config(cfg),))]


def check(cfg: dict[str, Any]) -> None:
    """What a probe trial refuses before anything is written: no probe section, a layer the
    network lacks (the network built untrained, once per config), a kNN k larger than a task's
    training split (the examples it draws neighbours from)."""
    spec = cfg.get("probe")
    if spec is None:
        raise HarnessError("a probe trial needs the probe section, e.g. probe.tasks=[digits]; "
                           "see `harness list tasks`")
    if spec["layers"]:
        net = network_facts(pretraining_config(cfg))
        for layer in spec["layers"]:
            check_layer(net, layer, "probe.layers entry")
    for item in spec["tasks"]:
        task = TASKS.get(item["name"]).obj
        n = dataset_facts(task.dataset, {**task.options, **item["options"]}).train_size
        if spec["knn_k"] > n:
            raise HarnessError(f"probe.knn_k {spec['knn_k']} is larger than the training split of task "
                               f"{item['name']!r} it draws neighbours from ({n} examples); accepted: at most {n}")


@trial_kind("probe", done_files=("done",), needs=pretraining_needs, check=check)
def probe(cfg: dict[str, Any], progress: bool | None = None) -> Path:
    """Probe the configured network (its pretraining run done first) at every layer on the tasks."""
    spec = cfg.get("probe")
    if spec is None:
        raise HarnessError("a probe trial needs the probe section, e.g. probe.tasks=[digits]; "
                           "see `harness list tasks`")
    out = configs.run_dir(cfg)
    if (out / "done").exists():
        return out
    pre = pretraining_config(cfg)
    source = configs.run_dir(pre) if spec["init"] == "trained" else None
    if source is not None and not (source / "done").exists():
        raise HarnessError(f"the network to probe is not trained: its pretraining run {str(source)!r} (config hash "
                           f"{source.name}) is not done; `harness probe` with this config trains it first "
                           "(or a sweep of kind probe plans it)")
    device = pick_device(cfg["device"])
    trained = load_trained(pre, device, checkpoint=source is not None)
    dataset, net = trained.dataset, trained.algorithm.probe_network()
    layers = spec["layers"] or net.layer_names
    for layer in layers:
        check_layer(net, layer, "probe.layers entry")
    tasks = {t["name"]: task_dataset(t["name"], t["options"]) for t in spec["tasks"]}
    for p in net.parameters():
        p.requires_grad_(False)
    claim(out, cfg)
    network = {"algorithm": pre["algorithm"]["name"], "backbone": pre["backbone"], "init": spec["init"],
               "layer_dims": net.layer_dims}
    info: dict[str, Any] = {"hash": configs.config_hash(cfg), "protocol": "transfer", "code_version": code_version(),
                            "init": spec["init"], "source": source.name if source else None, "layers": layers,
                            "layer_dims": {k: net.layer_dims[k] for k in layers}, "tasks": {}, "features": {}}
    cache_root = Path(cfg["output_dir"]) / "feature_cache"
    similarity, spectra = {}, {}
    recorded = manifest.read(out)
    for name, (task_data, column) in tasks.items():
        task_data = fit_inputs(task_data, dataset.input_shape)
        ys = labels(task_data, column)
        paths = features.layer_features(net, task_data, layers, cache_root, network, spec["batch_size"], device)
        info["tasks"][name] = {"dataset": TASKS.get(name).obj.dataset,
                               "label": column, "classes": list(task_data.schema.column(column).names),
                               "split_sizes": {s: len(x) for s, x in task_data.splits.items()}}
        info["features"][name] = {layer: {s: str(p) for s, p in by_split.items()} for layer, by_split in paths.items()}
        ids = {s: split.ids.numpy() for s, split in task_data.splits.items()}
        test_features = []
        for layer in layers:
            feats = {s: features.read_cached(paths[layer][s], ids[s]) for s in ids}
            target = files.inside(out / PREDICTIONS, name, f"{layer}.npz", what="probe predictions file")
            if manifest.name(out, target) not in recorded:  # a file not yet recorded is made again
                arrays = probe_layer(feats, ys, spec["cs"], spec["knn_k"], spec["max_iter"], device)
                files.save_arrays(target, **arrays, **{f"{s}.ids": ids[s] for s in ids})
                manifest.record(out, recorded, target)
            spectra.setdefault(name, {})[layer] = files.load_arrays(target)["train.spectrum"]
            test_features.append(feats["test"])
        similarity[name] = {"layers": layers, "matrix": _plain(cka_matrix(test_features))}
    files.write_json(out / "info.json", info)
    files.write_json(out / "cka.json", similarity)
    title = f"{cfg['algorithm']['name']} ({spec['init']}) {out.name}"
    plot_spectra(spectra, out / "spectrum.png", title)
    plot_cka(similarity, out / "cka.png", title)
    files.write_text(out / "done", "done\n")
    return out


def _plain(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else float(v) for v in row] for row in matrix]


def _figure(panels: int, height: float):
    fig = figures.figure(4.2 * panels, height)
    return fig, fig.subplots(1, panels, squeeze=False)[0]


def plot_spectra(spectra: dict[str, dict[str, np.ndarray]], path: Path, title: str) -> None:
    """Per task, the normalised singular values of each layer's train features (log scale),
    labelled with their RankMe."""
    fig, axes = _figure(len(spectra), 3.4)
    for ax, (task, layers) in zip(axes, spectra.items()):
        for layer, s in layers.items():
            if len(s) and s[0] > 0:
                ax.semilogy(np.arange(1, len(s) + 1), s / s[0], label=f"{layer} (RankMe {rankme(s):.1f})")
        ax.set(title=f"{task}", xlabel="index", ylabel="σ / σ₁")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    figures.save(fig, path)


def plot_cka(similarity: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """Per task, a heatmap of linear CKA between the layers (test split)."""
    fig, axes = _figure(len(similarity), 3.8)
    for ax, (task, cka) in zip(axes, similarity.items()):
        matrix = np.array([[np.nan if v is None else v for v in row] for row in cka["matrix"]])
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        ticks = range(len(cka["layers"]))
        ax.set_xticks(ticks, cka["layers"], rotation=60, fontsize=7)
        ax.set_yticks(ticks, cka["layers"], fontsize=7)
        ax.set_title(task)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=9)
    figures.save(fig, path)
