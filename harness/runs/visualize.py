"""Visualize trials: what a frozen network's representation keeps, seen through a diffusion model
conditioned on it (RCDM; ``harness.models.rcdm``), and measured (the ``visualization`` protocol).

A run config with a ``visualize`` section::

    visualize: {layer: backbone, image_size: 16, channels: [32, 64], steps: 600, batch_size: 64,
                lr: 0.001, drop: 0.2, sampling_steps: 20, n_images: 32, k_samples: 4}

names the network by the rest of the config, like a probe: the pretraining run the same config
describes without ``visualize`` (``output_dir/<its hash>``), the upstream trial this kind needs,
which the planner runs first. ``layer`` is any layer of its ``probe_network()`` (backbone,
projector, block). The trial encodes the pretraining dataset's training images at that layer
(standardised by their mean and spread), trains the UNet on the images fitted to
``image_size`` (in [-1, 1]) conditioned on their representation, with a fraction ``drop`` of each
batch's representations zeroed (the same model then samples unconditionally), checkpointing
every ``checkpoint_every`` steps (resumed exactly: model, optimizer and the generator of batches
and noise). It then samples by DDIM in ``sampling_steps`` steps, for ``n_images`` held-out
(test split) images, ``k_samples`` samples conditioned on each one's representation, on a
shuffled one's, and on none; and a pair's interpolation.

The run folder holds ``checkpoint.pt``, ``samples.npz`` (the held-out images and every sample,
uint8), ``predictions/retrieval.npz`` (the representations of the held-out images and of the
samples, and the training representations' mean and spread) and
``predictions/factors/<factor>.npz`` (per metadata column of the dataset: the held-out images'
values, and the values a probe trained on real training images reads from the real held-out
images and from each set of samples); the visualization protocol scores them. Also
``manifest.json`` (their sha256), ``info.json``, ``grid.png`` (held-out images, each with its
samples, then an unconditional sample), ``interpolation.png`` and ``done`` (last).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.core import config as configs
from harness.core import figures, files
from harness.core.errors import HarnessError
from harness.core.options import Option, check_options
from harness.core.registry import Need, config_section, trial_kind
from harness.core.version import code_version
from harness.data.tasks import fit_inputs
from harness.models.backbones import check_layer
from harness.models.rcdm import RCDM, check_image_size
from harness.protocols.visualization import FACTORS, PREDICTIONS, RETRIEVAL
from harness.runs import manifest
from harness.runs.features import encode
from harness.runs.hardware import pick_device
from harness.runs.run import claim
from harness.runs.trained import load_trained, network_facts

CHECKPOINT = "checkpoint.pt"
SAMPLE_SETS = ("samples", "shuffled", "unconditional")
INTERPOLATION_POINTS = 8
OPTIONS: dict[str, Option] = {
    "layer": Option("backbone", str, "a layer of the network's probe_network() (backbone, projector, block)"),
    "image_size": Option(16, int, "side of the UNet's square images (divisible by 2^(levels-1))", low=1),
    "channels": Option([32, 64], list, "each UNet level's width", items=Option(type=int, low=1), non_empty=True),
    "layers_per_block": Option(1, int, low=1),
    "steps": Option(600, int, "training steps of the UNet", low=1),
    "batch_size": Option(64, int, low=1),
    "lr": Option(1e-3, float, low=0, low_open=True),
    "drop": Option(0.2, float, "fraction of training representations zeroed (the unconditional baseline)",
                   low=0, high=1, high_open=True),
    "train_timesteps": Option(1000, int, low=2),
    "sampling_steps": Option(20, int, "DDIM steps", low=1),
    "n_images": Option(32, int, "held-out images", low=2),
    "k_samples": Option(4, int, "samples per held-out image", low=2),
    "checkpoint_every": Option(100, int, low=1),
    "encode_batch_size": Option(256, int, low=1),
}
NOT_HASHED = ("checkpoint_every", "encode_batch_size")


def hashed_part(spec: Any) -> Any:
    """What of a ``visualize`` value enters the run's config hash: not how often it checkpoints."""
    return {k: v for k, v in spec.items() if k not in NOT_HASHED} if isinstance(spec, dict) else spec


@config_section("visualize", default=None, identity=hashed_part, hashed_when_default=False, read_by=("visualize",))
def check_section(value: Any) -> dict[str, Any] | None:
    """A diffusion model conditioned on the configured network's representation (null: none)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise HarnessError(f"visualize must be a mapping like {{layer: backbone}}, got {value!r}")
    spec = check_options("visualize key", value, OPTIONS, prefix="visualize.")
    check_image_size(spec["image_size"], spec["channels"])
    if spec["sampling_steps"] > spec["train_timesteps"]:
        raise HarnessError(f"visualize.sampling_steps {spec['sampling_steps']} is more than the "
                           f"{spec['train_timesteps']} visualize.train_timesteps it samples among; accepted: at most "
                           f"{spec['train_timesteps']}")
    return spec


def pretraining_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config of the run whose network is visualized: the same without ``visualize``."""
    return {**copy.deepcopy(cfg), "visualize": None, "run_dir": None}


def pretraining_needs(cfg: dict[str, Any]) -> list[Need]:
    """A visualization needs its network's pretraining run (a ``train`` trial)."""
    if cfg.get("visualize") is None:
        return []
    return [Need("train", "pretraining", configs=(pretraining_config(cfg),))]


def fit(model: RCDM, optimizer: torch.optim.Optimizer, images: torch.Tensor, reps: torch.Tensor,
        spec: dict[str, Any], path: Path, seed: int) -> list[float]:
    """Train ``model`` for ``spec['steps']`` steps from the checkpoint at ``path`` if there is one
    (else from the start), saving one every ``checkpoint_every`` steps and at the end. Batches,
    timesteps, noise and dropped representations all come from one generator seeded by ``seed``,
    whose state the checkpoint keeps, so that a resumed run takes the same steps. Returns the
    loss of every step."""
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    start = 0
    if path.exists():
        state = files.load_torch(path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start, losses = int(state["step"]), list(state["losses"])
    model.train()
    device = next(model.parameters()).device
    for step in range(start, spec["steps"]):
        idx = torch.randint(0, len(images), (spec["batch_size"],), generator=generator)
        loss = model.loss(images[idx].to(device), reps[idx].to(device), generator, spec["drop"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if (step + 1) % spec["checkpoint_every"] == 0 or step + 1 == spec["steps"]:
            files.save_torch(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "generator": generator.get_state(), "step": step + 1, "losses": losses})
    model.eval()
    return losses


def check_network(net: Any, layer: str, input_shape: tuple[int, ...]) -> None:
    """HarnessErrors for a layer the network lacks and for inputs that are not images."""
    check_layer(net, layer, "visualize.layer")
    if len(input_shape) != 3:
        raise HarnessError(f"visualize draws images (channels, height, width); the pretraining dataset's inputs "
                           f"have shape {tuple(input_shape)}")


def check(cfg: dict[str, Any]) -> None:
    """Refuse, before anything is trained or written, a layer the configured network does not
    have and inputs that are not images (the network built untrained, as the seed initialises it)."""
    spec = cfg.get("visualize")
    if spec is None:
        raise HarnessError("a visualize trial needs the visualize section, e.g. visualize.layer=backbone")
    net = network_facts(pretraining_config(cfg))
    check_network(net, spec["layer"], net.input_shape)


@trial_kind("visualize", done_files=("done",), needs=pretraining_needs, check=check)
def visualize(cfg: dict[str, Any], progress: bool | None = None) -> Path:
    """Train a diffusion model conditioned on the configured network's layer, sample, score."""
    spec = cfg.get("visualize")
    if spec is None:
        raise HarnessError("a visualize trial needs the visualize section, e.g. visualize.layer=backbone")
    out = configs.run_dir(cfg)
    if (out / "done").exists():
        return out
    pre = pretraining_config(cfg)
    source = configs.run_dir(pre)
    if not (source / "done").exists():
        raise HarnessError(f"the network to visualize is not trained: its pretraining run {str(source)!r} (config "
                           f"hash {source.name}) is not done; `harness visualize` with this config trains it first "
                           "(or a sweep of kind visualize plans it)")
    device = pick_device(cfg["device"])
    trained = load_trained(pre, device)
    dataset, net = trained.dataset, trained.algorithm.probe_network()
    layer = spec["layer"]
    check_network(net, layer, dataset.input_shape)
    for p in net.parameters():
        p.requires_grad_(False)
    claim(out, cfg)
    torch.manual_seed(cfg["seed"])
    size = spec["image_size"]
    channels = dataset.input_shape[0]
    fitted = fit_inputs(dataset, (channels, size, size))
    train_images = _scaled(fitted.splits["train"].x)
    reps = {s: torch.from_numpy(encode(net, dataset.splits[s], spec["encode_batch_size"], device, layer=layer))
            for s in ("train", "test")}
    mean, spread = reps["train"].mean(0), reps["train"].std(0).clamp_min(1e-6)
    model = RCDM(net.layer_dims[layer], (channels, size, size), spec["channels"], spec["layers_per_block"],
                 train_timesteps=spec["train_timesteps"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    losses = fit(model, optimizer, train_images, (reps["train"] - mean) / spread, spec, out / CHECKPOINT, cfg["seed"])

    rng = np.random.RandomState(cfg["seed"])
    test = dataset.splits["test"]
    n, k = min(spec["n_images"], len(test)), spec["k_samples"]
    held = np.sort(rng.permutation(len(test))[:n])
    shuffle = (np.arange(n) + rng.randint(1, n)) % n  # every image conditioned on another one's representation
    cond = (reps["test"][held] - mean) / spread
    conditions = {"samples": cond.repeat_interleave(k, 0), "shuffled": cond[shuffle].repeat_interleave(k, 0),
                  "unconditional": torch.zeros(n * k, cond.shape[1])}
    generator = torch.Generator().manual_seed(cfg["seed"] + 1)
    samples = {name: model.sample(c.to(device), spec["sampling_steps"], generator, (channels, size, size)).cpu()
               for name, c in conditions.items()}
    alphas = torch.linspace(0, 1, INTERPOLATION_POINTS)[:, None]
    path_reps = (1 - alphas) * cond[0] + alphas * cond[1]
    interpolation = _interpolate(model, path_reps.to(device), spec["sampling_steps"], cfg["seed"] + 2,
                                 (channels, size, size))

    real = _scaled(fitted.splits["test"].x[held])
    sample_reps = {name: _encode_images(net, layer, x, dataset.input_shape, device) for name, x in samples.items()}
    files.save_arrays(out / "samples.npz", ids=test.ids[held].numpy(), real=_uint8(real),
                      interpolation=_uint8(interpolation), **{name: _uint8(x) for name, x in samples.items()})
    recorded: dict[str, str] = {}  # the manifest: written afresh, every predictions file made again
    target = out / PREDICTIONS / RETRIEVAL
    files.save_arrays(target, ids=test.ids[held].numpy(), conditioning=reps["test"][held].numpy(),
                      mean=mean.numpy(), spread=spread.numpy(), shuffle=shuffle, k=np.array(k),
                      **{name: r for name, r in sample_reps.items()})
    manifest.record(out, recorded, target)
    factors = _factor_predictions(fitted, held, real, samples, cfg["seed"])
    for name, arrays in factors.items():
        target = files.inside(out / PREDICTIONS, FACTORS, f"{name}.npz", what="factor predictions file")
        files.save_arrays(target, **arrays, k=np.array(k))
        manifest.record(out, recorded, target)
    info = {"hash": configs.config_hash(cfg), "protocol": "visualization", "code_version": code_version(),
            "source": source.name, "layer": layer, "rep_dim": net.layer_dims[layer], "n_images": n, "k_samples": k,
            "factors": sorted(factors), "final_loss": float(np.mean(losses[-50:])),
            "parameters": sum(p.numel() for p in model.parameters())}
    files.write_json(out / "info.json", info)
    title = f"{cfg['algorithm']['name']} {layer} {out.name}"
    plot_grid(real, samples, out / "grid.png", title, k)
    plot_interpolation(real[:2], interpolation, out / "interpolation.png", title)
    files.write_text(out / "done", "done\n")
    return out


def _interpolate(model: RCDM, reps: torch.Tensor, steps: int, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Samples along a path of representations, all from the same starting noise."""
    return torch.cat([model.sample(r[None], steps, torch.Generator().manual_seed(seed), shape).cpu() for r in reps])


def _scaled(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] as the UNet reads them, in [-1, 1]."""
    return x.float().clamp(0, 1) * 2 - 1


def _uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


@torch.no_grad()
def _encode_images(net: Any, layer: str, x: torch.Tensor, input_shape: tuple[int, ...], device: torch.device,
                   batch_size: int = 256) -> np.ndarray:
    """The network's representation at ``layer`` of images in [-1, 1], resized to its input."""
    parts = []
    for chunk in torch.split((x + 1) / 2, batch_size):
        if tuple(chunk.shape[2:]) != tuple(input_shape[1:]):
            shrink = chunk.shape[2] > input_shape[1]
            chunk = F.interpolate(chunk, size=tuple(input_shape[1:]), mode="bilinear", align_corners=False,
                                  antialias=shrink)
        parts.append(net.intermediates(chunk.to(device), [layer])[layer].float().cpu())
    return torch.cat(parts).numpy()


def _factor_predictions(fitted: Any, held: np.ndarray, real: torch.Tensor, samples: dict[str, torch.Tensor],
                        seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Per metadata column with at least two values: a logistic-regression probe on the pixels of
    the real training images (an observer that does not depend on the network visualized), and
    what it reads from the real held-out images and from every set of samples."""
    from sklearn.linear_model import LogisticRegression

    train, test = fitted.splits["train"], fitted.splits["test"]
    pixels = _scaled(train.x).flatten(1).numpy()
    out = {}
    for column in train.schema.columns:
        if column.size < 2:
            continue
        y = train.column(column.name).cpu().numpy()
        if len(np.unique(y)) < 2:
            continue
        probe = LogisticRegression(max_iter=300, random_state=seed).fit(pixels, y)
        out[column.name] = {"truth": test.column(column.name).cpu().numpy()[held],
                            "real": probe.predict(real.flatten(1).numpy()),
                            **{name: probe.predict(x.flatten(1).numpy()) for name, x in samples.items()}}
    return out


def _tiles(rows: list[list[torch.Tensor]]) -> np.ndarray:
    """One image (H × W × 3, in [0, 1]) of equally sized images (C × h × w in [-1, 1]) in rows,
    with a one-pixel white gap."""
    h, w = rows[0][0].shape[1:]
    width = max(len(r) for r in rows)
    canvas = np.ones(((h + 1) * len(rows) + 1, (w + 1) * width + 1, 3), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            rgb = _rgb((image.clamp(-1, 1) + 1) / 2)
            canvas[1 + i * (h + 1):(i + 1) * (h + 1), 1 + j * (w + 1):(j + 1) * (w + 1)] = rgb.permute(1, 2, 0).numpy()
    return canvas


def _rgb(image: torch.Tensor) -> torch.Tensor:
    """Three channels to show: grey repeated, two (red and green) padded with zero blue, more cut."""
    if len(image) == 1:
        return image.expand(3, -1, -1)
    return F.pad(image, (0, 0, 0, 0, 0, 3 - len(image))) if len(image) < 3 else image[:3]


def plot_grid(real: torch.Tensor, samples: dict[str, torch.Tensor], path: Path, title: str, k: int,
              rows: int = 8) -> Path:
    """Rows of: a held-out image, its ``k`` samples, and an unconditional sample."""
    shown = min(rows, len(real))
    lines = [[real[i], *samples["samples"][i * k:(i + 1) * k], samples["unconditional"][i * k]] for i in range(shown)]
    fig = figures.figure(0.5 * (k + 2) + 0.6, 0.5 * shown + 0.8)
    ax = fig.subplots()
    ax.imshow(_tiles(lines), interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_xlabel(f"held-out image | {k} samples | unconditional", fontsize=7)
    ax.set_title(title, fontsize=7)
    return figures.save(fig, path)


def plot_interpolation(ends: torch.Tensor, path_images: torch.Tensor, path: Path, title: str) -> Path:
    """Image A, samples along the line from A's representation to B's, image B."""
    fig = figures.figure(0.5 * (len(path_images) + 2) + 0.6, 1.3)
    ax = fig.subplots()
    ax.imshow(_tiles([[ends[0], *path_images, ends[1]]]), interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title + ": interpolation", fontsize=7)
    return figures.save(fig, path)
