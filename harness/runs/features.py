"""Frozen-feature caching: encode a dataset once with a frozen backbone, train heads on the cache.

A run config's ``features`` key (or ``harness features``) names the encoder::

    features: {backbone: timm:resnet50, pretrained: true, options: {}, layer: layer3, batch_size: 64}

Each split is encoded once, in eval mode and without gradients, and stored as
``<cache_root>/<key>/<split>.npz`` (arrays ``ids`` and ``features``, float32, uncompressed)
beside a ``meta.json`` that says what the key covers. The key hashes the backbone's name and
options, whether timm's pretrained weights were asked for, a hash of the weights themselves (so
another checkpoint or another random init is another key), and the dataset's identity: its
``info`` name, options, fingerprint (WILDS datasets: the wilds version and a hash of the metadata
files) and each split's input transform (its repr). A dataset held in memory without a
fingerprint is identified by a hash of its inputs and ids. Features are matched to examples by
id; a file missing any id of its split is encoded again.

``layer`` (default ``output``, what the backbone's forward returns) caches one of the backbone's
``layer_names`` instead, pooled to a vector; the key covers it when it is not the output.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.core import files
from harness.core.errors import HarnessError
from harness.core.options import Option, check_options
from harness.core.registry import config_section
from harness.data.dataset import ShiftDataset, Split, chunks, positions_of
from harness.models.backbones import OUTPUT, TIMM_PREFIX, backbone_factory, check_layer
from harness.runs.hardware import pick_device

CACHE_FORMAT = 1
SPEC_OPTIONS: dict[str, Option] = {
    "backbone": Option(None, str, "the frozen encoder, e.g. timm:resnet50", required=True),
    "pretrained": Option(False, bool, "timm's pretrained weights (timm:<model> backbones only)"),
    "options": Option({}, dict, "the backbone's options"),
    "layer": Option(OUTPUT, str, "the layer cached, pooled to a vector"),
    "batch_size": Option(64, int, low=1),
    "seed": Option(0, int, help="seeds the backbone's initialisation"),
    "device": Option("auto", str),
    "num_workers": Option(0, int, low=0),
}
NOT_HASHED = ("batch_size", "device", "num_workers")  # how fast features are computed, not what they are


def check_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with defaults filled in; unknown keys and wrong types are a HarnessError."""
    if not isinstance(spec, dict):
        raise HarnessError(f"features must be a mapping like {{backbone: timm:resnet18}}, got {spec!r}")
    out = check_options("features key", spec, SPEC_OPTIONS, prefix="features.")
    if out["pretrained"] and not out["backbone"].startswith(TIMM_PREFIX):
        raise HarnessError(f"features.pretrained: pretrained weights come from timm; "
                           f"{out['backbone']!r} is not a timm:<model> backbone")
    if out["layer"] == OUTPUT:  # the default stays out of the spec: run hashes predating layers hold
        del out["layer"]
    return out


def hashed_part(spec: Any) -> Any:
    """What of a ``features`` value enters the run's config hash: not how fast it is computed."""
    return {k: v for k, v in spec.items() if k not in NOT_HASHED} if isinstance(spec, dict) else spec


@config_section("features", default=None, identity=hashed_part)
def check_section(value: Any) -> dict[str, Any] | None:
    """Frozen-feature cache: train on features of a frozen backbone (null: on the inputs)."""
    return None if value is None else check_spec(value)


def apply(spec: dict[str, Any], dataset: ShiftDataset, cache_root: str | Path) -> ShiftDataset:
    """The dataset with every split's inputs replaced by cached frozen features (encoded now
    where the cache lacks them); ``input_shape`` becomes ``(feature_dim,)``."""
    spec = check_spec(spec)
    options = dict(spec["options"])
    if spec["backbone"].startswith(TIMM_PREFIX):
        options["pretrained"] = spec["pretrained"]
    net = frozen_backbone(spec["backbone"], dataset.input_shape, options, spec["seed"])
    layer = spec.get("layer", OUTPUT)
    check_layer(net, layer, "features.layer")
    identity = cache_identity(spec, net, dataset)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_root) / key
    device = pick_device(spec["device"])
    splits = {}
    for name, split in dataset.splits.items():
        features = _cached(folder / f"{name}.npz", split.ids.numpy())
        if features is None:
            features = encode(net.to(device), split, spec["batch_size"], device, spec["num_workers"], desc=name,
                              layer=layer)
            _store(folder / f"{name}.npz", split.ids.numpy(), features)
        splits[name] = dataclasses.replace(split, x=torch.from_numpy(features))
    if not (folder / "meta.json").exists():
        files.write_json(folder / "meta.json", identity)
    dim = int(next(iter(splits.values())).x.shape[1])
    info = {**dataset.info, "features": {"key": key, "dir": str(folder), "backbone": spec["backbone"],
                                         "layer": layer, "pretrained": spec["pretrained"], "dim": dim}}
    return dataclasses.replace(dataset, splits=splits, input_shape=(dim,), default_backbone="identity", info=info)


def frozen_backbone(name: str, input_shape: tuple[int, ...], options: dict[str, Any], seed: int) -> torch.nn.Module:
    """The backbone in eval mode without gradients, initialised from ``seed`` without touching
    the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            net = backbone_factory(name, input_shape, options)()
        except TypeError as exc:
            raise HarnessError(f"features.options do not fit backbone {name!r}: {exc}") from None
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def cache_identity(spec: dict[str, Any], net: torch.nn.Module, dataset: ShiftDataset) -> dict[str, Any]:
    """Everything the cached features depend on, as plain JSON (hashed into the key). The layer
    enters only when it is not the output, so keys of output features predating layers hold."""
    return {
        "format": CACHE_FORMAT,
        "backbone": spec["backbone"], "options": spec["options"], "pretrained": spec["pretrained"],
        **({"layer": spec["layer"]} if spec.get("layer", OUTPUT) != OUTPUT else {}),
        "weights": weights_hash(net),
        "dataset": dataset_identity(dataset),
    }


def weights_hash(net: torch.nn.Module) -> str:
    return _digest(net.state_dict().items())


def _digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 of tensors' names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in named:
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def dataset_identity(dataset: ShiftDataset) -> dict[str, Any]:
    info = dataset.info
    identity: dict[str, Any] = {"name": info.get("name"), "options": info.get("options"),
                                "fingerprint": info.get("fingerprint"), "input_shape": list(dataset.input_shape),
                                "transforms": {n: repr(getattr(s.x, "transform", None))
                                               for n, s in dataset.splits.items()}}
    if identity["fingerprint"] is None:
        on_disk = [n for n, s in dataset.splits.items() if not s.in_memory]
        if on_disk:
            raise HarnessError(f"dataset {info.get('name', '?')!r} reads its {', '.join(on_disk)} inputs from disk "
                               "but declares no info['fingerprint'] (a hash of its files), so cached features "
                               "could go stale; the dataset module must set one")
        identity["content"] = {n: _digest([("x", s.x), ("ids", s.ids)]) for n, s in dataset.splits.items()}
    return identity


def encode(net: torch.nn.Module, split: Split, batch_size: int, device: torch.device,
           num_workers: int = 0, desc: str = "", layer: str = OUTPUT) -> np.ndarray:
    """Frozen features (n × dim, float32) of one layer for a split's inputs, in the split's order."""
    return encode_layers(net, split, batch_size, device, [layer], num_workers, desc)[layer]


@torch.no_grad()
def encode_layers(net: torch.nn.Module, split: Split, batch_size: int, device: torch.device, layers: list[str],
                  num_workers: int = 0, desc: str = "") -> dict[str, np.ndarray]:
    """Frozen features (n × dim, float32) of several layers, from one forward pass per batch."""
    if split.in_memory:
        batches: Any = (split.x[idx] for idx in chunks(len(split), batch_size))
    else:
        batches = torch.utils.data.DataLoader(split.x, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    for x in tqdm(batches, total=math.ceil(len(split) / batch_size), desc=f"encoding {desc}", unit="batch",
                  leave=False, disable=not sys.stderr.isatty()):
        for layer, value in net.intermediates(x.to(device), layers).items():
            parts[layer].append(value.float().cpu())
    return {layer: torch.cat(p).numpy() if p else np.zeros((0, net.layer_dims[layer]), dtype=np.float32)
            for layer, p in parts.items()}


def layer_features(net: torch.nn.Module, dataset: ShiftDataset, layers: list[str], cache_root: str | Path,
                   network: dict[str, Any], batch_size: int, device: torch.device) -> dict[str, dict[str, Path]]:
    """Cache the features of several layers of a frozen network for every split of a dataset:
    the layers a split lacks in the cache come from one forward pass per batch. Each layer has
    its own cache folder, keyed by ``network`` (what the weights belong to: backbone, options),
    a hash of the weights, the layer and the dataset's identity. Returns the cache file of each
    layer and split (arrays ``ids`` and ``features``)."""
    base = {"format": CACHE_FORMAT, **network, "weights": weights_hash(net), "dataset": dataset_identity(dataset)}
    identities = {layer: {**base, "layer": layer} for layer in layers}
    folders = {layer: Path(cache_root) / hashlib.sha256(json.dumps(identities[layer], sort_keys=True,
                                                                   default=str).encode()).hexdigest()[:16]
               for layer in layers}
    for name, split in dataset.splits.items():
        ids = split.ids.numpy()
        missing = [layer for layer in layers if _cached(folders[layer] / f"{name}.npz", ids) is None]
        if missing:
            for layer, values in encode_layers(net.to(device), split, batch_size, device, missing, desc=name).items():
                _store(folders[layer] / f"{name}.npz", ids, values)
    for layer, folder in folders.items():
        if not (folder / "meta.json").exists():
            files.write_json(folder / "meta.json", identities[layer])
    return {layer: {name: folders[layer] / f"{name}.npz" for name in dataset.splits} for layer in layers}


def read_cached(path: str | Path, ids: np.ndarray) -> np.ndarray:
    """Cached features of these example ids, in this order (a HarnessError when any is missing)."""
    features = _cached(Path(path), np.asarray(ids))
    if features is None:
        raise HarnessError(f"feature cache {str(path)!r} is missing or lacks some of the examples asked for; "
                           "run the probe trial again to encode them")
    return features


def _cached(path: Path, ids: np.ndarray) -> np.ndarray | None:
    """The cached features of these ids, in this order, or None when any is missing."""
    if not path.exists():
        return None
    arrays = files.load_arrays(path)
    rows, missing = positions_of(arrays["ids"], ids)
    return None if len(missing) else arrays["features"][rows]


def _store(path: Path, ids: np.ndarray, features: np.ndarray) -> None:
    with files.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, ids=ids.astype(np.int64), features=features.astype(np.float32))


def cache_files(dataset: ShiftDataset) -> dict[str, Path]:
    """The cache file of each split of a dataset returned by :func:`apply`."""
    folder = Path(dataset.info["features"]["dir"])
    return {name: folder / f"{name}.npz" for name in dataset.splits}
