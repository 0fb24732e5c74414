"""The official HFS code (facebookresearch/disentangling-correlated-factors) beside ours: the same
procedural-dSprites training images, the same VAE, the same steps; per-step training time on both
sides and both sides' final codes scored by our DCI/MIG. Used by ``vs_peers.py --hfs-repo``.

- Data: our ``procedural_dsprites`` training split (optionally posX-posY correlated) is written as
  the dSprites archive (``imgs``, ``latents_classes``, ``latents_values``) under the file name the
  peer's ``datasets/dsprites.py`` opens (``<data.root>/dsprite_train.npz``), so the peer samples
  from exactly our training images; the correlation is in the images written, not in the peer's
  sampler, which it then does not need.
- The peer runs unmodified through its own ``base_main.py`` and fastargs options, launched by a
  driver file written into the scratch folder (``PEER_DRIVER``) that times each call of its
  trainer's ``_train_iteration`` (forward, loss, backward, Adam step; its data loader, checkpoint
  writing and logging fall outside) and then runs ``base_main.py`` as ``__main__``.
- Ours: the registered algorithm's ``update`` on the batches ``batch_indices`` gives (one fresh
  permutation per epoch, as the run loop), each batch rendered before its timer starts.
- Scoring: the peer's final checkpoint is read with ``weights_only=True`` and its weights loaded
  into our ``ConvVAE`` (the layers map one to one; its encoder's last layer interleaves mean and
  log-variance per latent, ours stacks them); both encoders then map the same test images
  (independent factors) to posterior means, scored by ``harness.protocols.factors``.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from harness.algorithms.vae import ConvVAE
from harness.core.registry import ALGORITHMS, DATASETS
from harness.data.dataset import ShiftDataset, batch_indices
from harness.datasets.dsprites import SIZES, render
from harness.protocols.factors import dci, mig

METHODS = ("beta_vae", "beta_vae_hfs")
PEER_FILE = "dsprite_train.npz"  # the peer's DSprites.files["train"]
BATCH, LR, BETA, GAMMA, PAIRS = 64, 5e-4, 4.0, 1.0, 25  # the peer's default lr and pair count
ACTIVE_VARIANCE = 0.01  # a latent is active if its posterior mean varies by more over the test images (Burda et al.)

# Runs base_main.py unmodified with a timer around each training iteration (argv: repo, seconds
# file, then the peer's own options), torch's threads pinned to OMP_NUM_THREADS (vs_peers --threads).
PEER_DRIVER = '''\
import json, os, runpy, sys, time
import torch
repo, seconds_file, options = sys.argv[1], sys.argv[2], sys.argv[3:]
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
sys.path.insert(0, repo)
sys.argv = [repo + "/base_main.py", *options]
import dent.trainers.basetrainer as basetrainer
seconds, iteration = [], basetrainer.BaseTrainer._train_iteration
def timed(self, samples):
    start = time.perf_counter()
    out = iteration(self, samples)
    seconds.append(time.perf_counter() - start)
    return out
basetrainer.BaseTrainer._train_iteration = timed
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    with open(seconds_file, "w") as f:
        json.dump(seconds, f)
'''


def dataset(n_train: int, n_test: int, correlated: bool) -> ShiftDataset:
    """Our procedural dSprites: the training split (posX-posY correlated at σ = 0.1, or independent)
    and independent test images."""
    options = {"correlated": "posX:posY", "sigma": 0.1} if correlated else {}
    return DATASETS.get("procedural_dsprites").obj(n_train=n_train, n_val=2, n_test=n_test, n_shift=100, **options)


def write_archive(data: ShiftDataset, folder: Path) -> Path:
    """The training split as the dSprites archive: ``imgs`` (N, 64, 64) uint8 in {0, 1},
    ``latents_classes`` (N, 6: colour 0, shape, scale, orientation, posX, posY) and
    ``latents_values`` (colour 1, shape 1..3, scale 0.5..1, orientation 0..2π, positions 0..1)."""
    train = data.splits["train"]
    classes = np.stack([train.column(name).numpy() for name in ("shape", "scale", "orientation", "posX", "posY")], 1)
    values = np.stack([classes[:, 0] + 1.0, 0.5 + 0.5 * classes[:, 1] / (SIZES[1] - 1),
                       2 * np.pi * classes[:, 2] / (SIZES[2] - 1), classes[:, 3] / (SIZES[3] - 1),
                       classes[:, 4] / (SIZES[4] - 1)], 1)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PEER_FILE
    np.savez(path, imgs=render(classes).astype(np.uint8),
             latents_classes=np.concatenate([np.zeros((len(classes), 1), np.int64), classes], 1),
             latents_values=np.concatenate([np.ones((len(classes), 1)), values], 1))
    return path


def peer_options(method: str, root: Path, out: Path, steps: int, seed: int) -> list[str]:
    """The peer's fastargs options for ``method`` (its losses ``betavae`` and
    ``factorizedsupportvae``: β·KL plus γ times the hard Hausdorff distance on the full
    factorized support of ``PAIRS`` random latent pairs, no scale term)."""
    loss = ["--train.loss=betavae", f"--betavae.beta={BETA}"] if method == "beta_vae" else [
        "--train.loss=factorizedsupportvae", f"--factorizedsupportvae.beta={BETA}",
        f"--factorizedsupportvae.gamma={GAMMA}", "--factorizedsupportvae.delta=0",
        "--factorizedsupportvae.matching=hausdorff_hard", "--factorizedsupportvae.factorized_support_estimation=full",
        f"--factorizedsupportvae.num_latent_pairs={PAIRS}"]
    return ["--data.name=dsprites", f"--data.root={root}", "--data.num_workers=0", "--model.name=vae_locatello",
            "--vae_locatello.latent_dim=10", f"--train.lr={LR}", f"--train.batch_size={BATCH}",
            f"--train.iterations={steps}", f"--train.seed={seed}", f"--train.checkpoint_every={10 ** 6}",
            "--run.do=['train']", "--run.on_cpu=True", "--run.restore_from=n/a", "--log.wandb_mode=off",
            f"--log.base_dir={out / 'results'}", "--log.project=vs_peers", f"--log.group={method}", *loss]


def run_peer(repo: Path, python: str, method: str, root: Path, out: Path, steps: int, seed: int,
             env: dict[str, str]) -> tuple[list[float], dict[str, torch.Tensor]]:
    """The peer's training in a subprocess: its per-iteration seconds and final model weights."""
    out.mkdir(parents=True)
    driver, seconds = out / "peer_driver.py", out / "seconds.json"
    driver.write_text(PEER_DRIVER)
    with open(out / "log.txt", "w") as log:
        done = subprocess.run([python, str(driver), str(repo.resolve()), str(seconds),
                               *peer_options(method, root, out, steps, seed)],
                              cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"the HFS peer failed ({done.returncode}); see {out / 'log.txt'}")
    (checkpoint,) = (out / "results").rglob("chkpt.pth.tar")
    return json.loads(seconds.read_text()), torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]


# the peer's layer names → ours (encoder and decoder Sequentials of harness.algorithms.vae.ConvVAE)
LAYERS = {"encoder.conv1": "encoder.0", "encoder.conv2": "encoder.2", "encoder.conv3": "encoder.4",
          "encoder.conv4": "encoder.6", "encoder.lin": "encoder.9", "encoder.dist_statistics": "encoder.11",
          "decoder.lin1": "decoder.0", "decoder.lin2": "decoder.2", "decoder.convT1": "decoder.5",
          "decoder.convT2": "decoder.7", "decoder.convT3": "decoder.9", "decoder.convT4": "decoder.11"}


def peer_to_ours(state: dict[str, torch.Tensor], latents: int = 10) -> dict[str, torch.Tensor]:
    """The peer's ``vae_locatello`` state dict as our ConvVAE's. Its encoder's last layer gives
    (mean_0, logvar_0, mean_1, ...) (viewed as (latents, 2)); ours gives all means, then all
    log-variances, so those rows are reordered. Its decoder ends in a sigmoid, ours in logits:
    the same weights."""
    order = torch.cat([torch.arange(0, 2 * latents, 2), torch.arange(1, 2 * latents, 2)])
    out = {}
    for key, value in state.items():
        layer, _, kind = key.rpartition(".")
        if layer not in LAYERS:
            raise SystemExit(f"unexpected layer {layer!r} in the peer's checkpoint; expected {', '.join(LAYERS)}")
        out[f"{LAYERS[layer]}.{kind}"] = value[order] if layer == "encoder.dist_statistics" else value
    return out


def train_ours(data: ShiftDataset, method: str, steps: int, seed: int, init: str) -> tuple[list[float], ConvVAE]:
    """Our algorithm's updates, each timed alone (its batch is rendered before the timer starts)."""
    entry = ALGORITHMS.get(method)
    hparams = {k: hp.default for k, hp in entry.hparams.items()}
    hparams.update(lr=LR, batch_size=BATCH, beta=BETA, init=init)
    if "gamma" in hparams:
        hparams.update(gamma=GAMMA, hfs_pairs=PAIRS)
    train = data.splits["train"]
    torch.manual_seed(seed)
    algo = entry.obj(data.input_shape, hparams, len(train))
    algo.train()
    seconds = []
    for step in range(steps):
        x = train.inputs(batch_indices(len(train), BATCH, step, seed))
        start = time.perf_counter()
        algo.update(x, step)
        seconds.append(time.perf_counter() - start)
    return seconds, algo.vae


@torch.no_grad()
def score(vae: ConvVAE, data: ShiftDataset) -> dict[str, float]:
    """DCI (disentanglement_lib's estimator, one process) and MIG of the posterior means on the
    test images, and the active latents (posterior-mean variance over them > ``ACTIVE_VARIANCE``)."""
    test = data.splits["test"]
    vae.eval()
    codes = torch.cat([vae.encode(test.inputs(torch.arange(i, min(i + 500, len(test)))))[0]
                       for i in range(0, len(test), 500)]).numpy()
    factors = np.stack([test.column(c.name).numpy() for c in data.schema.columns], 1)
    return {"dci_d": dci(codes, factors)["dci_d"], "mig": mig(codes, factors)[0],
            "active": int((codes.var(0) > ACTIVE_VARIANCE).sum())}


def size_problem(steps: int, n_train: int) -> str | None:
    """Why these sizes cannot be compared, if they cannot: the peer trains whole epochs
    (``train.iterations`` rounds up to one), so the steps must fill whole epochs of ours too."""
    if n_train < BATCH or n_train % BATCH or steps < 1 or steps % (n_train // BATCH):
        return (f"--hfs-train must be a positive multiple of {BATCH} and --hfs-steps a positive multiple of "
                f"--hfs-train / {BATCH} (the peer trains whole epochs); got {n_train} and {steps}")
    return None


def compare(repo: Path | None, python: str, work: Path, steps: int, n_train: int, n_test: int, correlated: bool,
            rounds: int, seed: int, init: str, env: dict[str, str]) -> dict[str, float]:
    """Both methods, both sides (ours alone without ``repo``), alternating within each round (the
    peer first in even rounds); prints per-step times and scores, returns ``{method: peer / ours}``
    of the median per-step seconds (``{method: ours}`` without a peer)."""
    data = dataset(n_train, n_test, correlated)
    root = work / "hfs_data"
    if repo is not None:
        write_archive(data, root)
    print(f"hfs: {'posX-posY correlated (sigma 0.1)' if correlated else 'independent'} training, "
          f"{n_train} training images (the same on both sides), {steps} steps of batch {BATCH}, lr {LR}, beta {BETA}, "
          f"gamma {GAMMA}, {PAIRS} pairs; our init {init}; scored on {n_test} independent test images", flush=True)
    out = {}
    for method in METHODS:
        medians: dict[str, list[float]] = {"peer": [], "ours": []}
        for r in range(rounds):
            sides = ["peer", "ours"] if repo is not None else ["ours"]
            for side in sides if r % 2 == 0 else sides[::-1]:
                if side == "peer":
                    seconds, state = run_peer(repo, python, method, root, work / f"hfs-{method}-peer{r}", steps, seed,
                                              env)
                    vae = ConvVAE(1, 10)
                    vae.load_state_dict(peer_to_ours(state))
                else:
                    seconds, vae = train_ours(data, method, steps, seed, init)
                if len(seconds) != steps:
                    raise SystemExit(f"hfs {method} {side}: {len(seconds)} steps timed, expected {steps}")
                per_step = float(np.median(seconds[1:] or seconds))  # the first step warms up allocators
                medians[side].append(per_step)
                scores = score(vae, data)
                print(f"hfs {method} round {r} {side}: {1e3 * per_step:.1f} ms/step (median of {steps}), "
                      f"DCI-D {scores['dci_d']:.3f}, MIG {scores['mig']:.3f}, active latents {scores['active']}",
                      flush=True)
        ours = float(np.median(medians["ours"]))
        out[method] = float(np.median(medians["peer"])) / ours if repo is not None else ours
    return out
