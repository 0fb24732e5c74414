"""The harness against its peers' official code, same data, same model, side by side.

Given checkouts of the peers' public repositories (run unmodified, never copied here; this script
fetches nothing), it writes the data in the layout each peer reads into a scratch folder, runs
each side (the peers as subprocesses), alternating, and prints times, accuracies or scores and
one ``ratio: <peer / ours>`` line per comparison.

- XRM end to end (facebookresearch/XRM, main.py): phase 1, XRM's twins on ColorMNIST for
  --hparam-sets hyperparameter draws; phase 2, GroupDRO on the groups of the draw with the largest
  flip rate, --hparam-sets draws. Ours: `harness discover` per draw, the largest final flip rate,
  `harness train algorithm.name=group_dro groups=inferred:<it>` per draw; each draw with the
  peer's values (lr, batch size, weight decay, eta: its registry's formula) and 50k/10k/10k.
  Fashion-MNIST is written in the layout torchvision's MNIST reader expects, so that the peer's
  ColorMNIST and our colored_fashion_mnist read the same images. ``--seeds N``: seeds 0..N-1 on
  both sides (the peer's --num_seeds: the phase-1 draw chosen at seed 0, its groups of each seed
  used; ours the same, with the run's and the dataset's seed set to it) and a parity table: test
  worst-class accuracy and the selected step per seed, means ± s.e., and whether the difference
  is within two standard errors.
- DomainBed's ERM trial (facebookresearch/DomainBed, domainbed.scripts.train): ColoredMNIST, test
  environment 2, --domainbed-steps steps of batch 64 per training environment, its MNIST_CNN.
  Ours: `harness train` on colored_fashion_mnist with backbone domainbed_mnist_cnn, batch 128,
  the same training and validation sizes (37,333 / 9,333), evaluated at the same two steps.
- HFS (facebookresearch/disentangling-correlated-factors, base_main.py): β-VAE and β-VAE + HFS
  on our procedural dSprites written as its archive (posX-posY correlated at σ = 0.1 unless
  --hfs-independent), --hfs-steps steps of batch 64 at lr 5e-4, β = 4, γ = 1, 25 latent pairs;
  per-step training time (the update alone, median over the steps) and both final models' codes
  scored by our DCI/MIG on the same test images (_hfs_peer.py says how). One ``ratio (hfs
  <method>, per step)`` line per method.

The last line is the HFS ratio with HFS when that comparison ran, else the XRM end-to-end ratio
when XRM ran, else DomainBed's. Accuracies: test average accuracy on both sides, and the peer's
test "wga" (its ColorMNIST test split has one attribute value, so that is the worst class)
against our test worst-class accuracy, at the checkpoint and draw with the best validation
worst-group accuracy on the inferred groups.

``--smoke`` runs our side of every comparison alone (no peer checkouts), at a tiny size (XRM
and ERM on random images written as Fashion-MNIST's IDX files: one draw, a few steps, 64/20/20
examples; HFS: 2 steps on 128 images, 60 scored); with no peer to compare, its last line is our
XRM recipe's wall over our ERM trial's.

    OMP_NUM_THREADS=1 python benchmarks/vs_peers.py --xrm-repo /work/peers/XRM --seeds 3 \\
        --domainbed-repo /work/peers/DomainBed --peer-python /work/peers/venv/bin/python
    OMP_NUM_THREADS=1 python benchmarks/vs_peers.py --hfs-repo /work/peers/hfs --peer-python /work/peers/venv/bin/python
    OMP_NUM_THREADS=1 python benchmarks/vs_peers.py --smoke
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import _hfs_peer
from harness.algorithms.vae import INITS
from harness.datasets.colored import DEBIAN_ROOT, FASHION_FILES, fashion_files

XRM_DATASET = "ColorMNIST"
# train, val and test examples of our side of each comparison
XRM_SIZES, DOMAINBED_SIZES, SMOKE_SIZES = (50000, 10000, 10000), (37333, 9333, 10000), (64, 20, 20)
# --smoke: seconds, the same path for our side
SMOKE = {"steps": 3, "hparam_sets": 1, "domainbed_steps": 3, "hfs_steps": 2, "hfs_train": 128, "hfs_test": 60}


def xrm_draw(comb: int) -> dict[str, float]:
    """The peer's ColorMNIST hyperparameters of draw ``comb`` (its registry's formula: one
    RandomState(comb), lr, batch size, weight decay, then GroupDRO's eta)."""
    rs = np.random.RandomState(comb)
    lr, batch = 10 ** rs.uniform(-5, -3), int(2 ** rs.uniform(3, 6))
    return {"lr": lr, "batch_size": batch, "weight_decay": 10 ** rs.uniform(-6, -3), "eta": 10 ** rs.uniform(-3, -1)}


def prepare_data(fashion_root: Path, work: Path) -> Path:
    """``work/data/MNIST/raw/``: Fashion-MNIST's four IDX files, uncompressed: what torchvision's
    MNIST reader finds without downloading, and colored_fashion_mnist reads with root= that folder."""
    found = fashion_files(fashion_root)
    if found is None:
        raise SystemExit(f"Fashion-MNIST not found in {fashion_root} (apt-get install dataset-fashion-mnist)")
    raw = work / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, path in zip(FASHION_FILES, found):
        data = path.read_bytes()
        data = gzip.decompress(data) if path.suffix == ".gz" else data
        (raw / name).write_bytes(data)
    return work / "data"


def random_fashion(folder: Path, n_train: int, n_test: int) -> Path:
    """Random 28x28 images and classes in Fashion-MNIST's four gzipped IDX files (Debian's layout),
    for --smoke: what prepare_data and colored_fashion_mnist read, without the dataset."""
    rng = np.random.RandomState(0)
    folder.mkdir(parents=True)
    for name, n in zip(FASHION_FILES, (n_train, n_train, n_test, n_test)):
        shape = (n, 28, 28) if "images" in name else (n,)
        values = rng.randint(0, 256 if "images" in name else 10, shape).astype(np.uint8)
        header = bytes([0, 0, 0x08, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
        (folder / f"{name}.gz").write_bytes(gzip.compress(header + values.tobytes()))
    return folder


def timed(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    """Wall seconds of one subprocess; its output goes to ``log``; a failure stops the benchmark."""
    start = time.perf_counter()
    with open(log, "a") as out:
        result = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(command)}; see {log}")
    return wall


def harness(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- XRM end to end -----------------------------------------------------------------------------
def xrm_peer(repo: Path, python: str, data: Path, folder: Path, args: argparse.Namespace,
             env: dict[str, str]) -> tuple[float, list[dict]]:
    """Both phases for seeds 0..--seeds-1 (its --num_seeds: the phase-1 draw is chosen by its flip
    rate at seed 0, then that draw's groups of each seed are used, its own recipe); per seed, the
    checkpoint and draw with the best validation worst-group accuracy on the inferred groups."""
    folder.mkdir(parents=True)
    (folder / "mnist").symlink_to(data)  # the peer reads ./mnist/MNIST/raw
    # its phase 2 picks the phase-1 draw by flip rate only in a folder whose path holds "phase_1"
    log = folder / "log.txt"
    common = [python, str(repo / "main.py"), "--datasets", XRM_DATASET, "--num_seeds", str(args.seeds),
              "--num_hparams_combs", str(args.hparam_sets)]
    wall = timed([*common, "--phase", "1", "--algorithms", "XRM", "--group_labels", "no",
                  "--out_dir", str(folder / "phase_1")], folder, env, log)
    wall += timed([*common, "--phase", "2", "--algorithms", "GroupDRO",
                   "--group_labels", str(folder / "phase_1" / "XRM"), "--out_dir", str(folder / "phase_2")],
                  folder, env, log)
    results = folder / "phase_2" / "GroupDRO" / XRM_DATASET / "group_labels_inferred"
    per_seed = []
    for seed in range(args.seeds):
        rows = [r for f in results.glob(f"results_*_seed{seed}.json") for r in read_rows(f) if "step" in r]
        # its val groups are the inferred ones, so its va_wga is our val.source_worst_group_acc
        best = max(rows, key=lambda r: (r["va_wga"], -r["step"]))  # the first line of a file is the hparams
        per_seed.append({"test_avg_acc": best["te_avg_acc"], "test_worst_class_acc": best["te_wga"],
                         "step": best["step"]})
    return wall, per_seed


def xrm_ours(data: Path, folder: Path, args: argparse.Namespace, env: dict[str, str],
             sizes: tuple[int, int, int]) -> tuple[float, list[dict]]:
    """The peer's recipe on our side, seed by seed (the run's seed and the dataset's: the peer's
    seed also draws its data's noise): the discovery draw chosen by its final flip rate at seed 0,
    that draw's discovery of each seed giving the groups."""
    folder.mkdir(parents=True)
    log = folder / "log.txt"
    n_train, n_val, n_test = sizes
    common = ["dataset.name=colored_fashion_mnist", f"dataset.options.root={data / 'MNIST' / 'raw'}",
              f"dataset.options.n_train={n_train}", f"dataset.options.n_val={n_val}",
              f"dataset.options.n_test={n_test}",
              "backbone.name=mlp", f"steps={args.steps}", "eval_every=50", f"output_dir={folder}", "device=cpu"]
    seeds = [[f"seed={seed}", f"dataset.options.seed={seed}"] for seed in range(args.seeds)]
    wall = 0.0
    for seed in range(args.seeds):
        for comb in range(args.hparam_sets):
            draw = xrm_draw(comb)
            hparams = [f"algorithm.hparams.{k}={draw[k]}" for k in ("lr", "batch_size", "weight_decay")]
            wall += timed(harness("discover", *common, *seeds[seed], "algorithm.name=xrm", *hparams,
                                  f"run_dir={folder / f'xrm{comb}-seed{seed}'}"), folder, env, log)
    best_comb = max(range(args.hparam_sets),
                    key=lambda c: json.loads((folder / f"xrm{c}-seed0" / "discovery.json").read_text())["flip_rate"])
    per_seed = []
    for seed in range(args.seeds):
        rows = []
        for comb in range(args.hparam_sets):
            draw = xrm_draw(comb)
            hparams = [f"algorithm.hparams.{k}={draw[k]}" for k in ("lr", "batch_size", "weight_decay", "eta")]
            run = folder / f"group_dro{comb}-seed{seed}"
            wall += timed(harness("train", *common, *seeds[seed], "algorithm.name=group_dro",
                                  f"groups=inferred:{folder / f'xrm{best_comb}-seed{seed}'}", *hparams,
                                  f"run_dir={run}"), folder, env, log)
            rows += read_rows(run / "results.jsonl")
        best = max(rows, key=lambda r: (r["metrics"]["val"]["source_worst_group_acc"], -r["step"]))
        test = best["metrics"]["test"]
        per_seed.append({"test_avg_acc": test["avg_acc"], "test_worst_class_acc": test["worst_class_acc"],
                         "step": best["step"]})
    return wall, per_seed


def parity(per_seed: dict[str, list[dict]]) -> None:
    """Test worst-class accuracy and selected step per seed on both sides, means ± s.e. and whether
    the difference of the means is within two standard errors (of the difference; unpaired)."""
    peer, ours = per_seed["peer"], per_seed["ours"]
    print("xrm parity: seed | peer test worst-class (step) | ours test worst-class (step)")
    for seed, (p, o) in enumerate(zip(peer, ours)):
        print(f"xrm parity: {seed} | {p['test_worst_class_acc']:.4f} ({p['step']}) | "
              f"{o['test_worst_class_acc']:.4f} ({o['step']})")
    a = np.array([p["test_worst_class_acc"] for p in peer])
    b = np.array([o["test_worst_class_acc"] for o in ours])
    if len(a) < 2:
        print(f"xrm parity: peer {a.mean():.4f}, ours {b.mean():.4f}; one seed: no standard error (--seeds 3 or more)")
        return
    se_a, se_b = a.std(ddof=1) / np.sqrt(len(a)), b.std(ddof=1) / np.sqrt(len(b))
    diff, se = a.mean() - b.mean(), float(np.hypot(se_a, se_b))
    print(f"xrm parity: peer {a.mean():.4f} ± {se_a:.4f}, ours {b.mean():.4f} ± {se_b:.4f} (mean ± s.e. over "
          f"{len(a)} seeds); difference {diff:+.4f} ± {se:.4f}: "
          f"{'within' if abs(diff) <= 2 * se else 'outside'} two standard errors")


# --- DomainBed's ERM trial ----------------------------------------------------------------------
def domainbed_peer(repo: Path, python: str, data: Path, folder: Path, args: argparse.Namespace,
                   env: dict[str, str]) -> tuple[float, dict]:
    folder.mkdir(parents=True)
    command = [python, "-m", "domainbed.scripts.train", "--data_dir", str(data), "--dataset", "ColoredMNIST",
               "--algorithm", "ERM", "--test_envs", "2", "--steps", str(args.domainbed_steps),
               "--output_dir", str(folder / "out")]
    wall = timed(command, repo, env, folder / "log.txt")
    last = read_rows(folder / "out" / "results.jsonl")[-1]
    return wall, {"test_avg_acc": (last["env2_in_acc"] + last["env2_out_acc"]) / 2,
                  "val_avg_acc": (last["env0_out_acc"] + last["env1_out_acc"]) / 2, "step": last["step"]}


def domainbed_ours(data: Path, folder: Path, args: argparse.Namespace, env: dict[str, str],
                   sizes: tuple[int, int, int]) -> tuple[float, dict]:
    folder.mkdir(parents=True)
    steps = args.domainbed_steps
    run = folder / "erm"
    n_train, n_val, n_test = sizes
    command = harness("train", "dataset.name=colored_fashion_mnist", f"dataset.options.root={data / 'MNIST' / 'raw'}",
                      f"dataset.options.n_train={n_train}", f"dataset.options.n_val={n_val}",
                      f"dataset.options.n_test={n_test}",
                      "backbone.name=domainbed_mnist_cnn", "algorithm.name=erm",
                      f"algorithm.hparams.batch_size={min(128, n_train)}",  # DomainBed's 128; --smoke has fewer
                      f"steps={steps}", f"eval_every={max(1, steps - 1)}", "device=cpu", f"run_dir={run}")
    wall = timed(command, folder, env, folder / "log.txt")
    last = read_rows(run / "results.jsonl")[-1]
    return wall, {"test_avg_acc": last["metrics"]["test"]["avg_acc"], "val_avg_acc": last["metrics"]["val"]["avg_acc"],
                  "step": last["step"]}


def show(acc: dict | list[dict]) -> str:
    return "; ".join(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in a.items())
                     for a in (acc if isinstance(acc, list) else [acc]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--xrm-repo", type=Path, help="a checkout of facebookresearch/XRM (skipped if not given)")
    parser.add_argument("--domainbed-repo", type=Path, help="a checkout of facebookresearch/DomainBed (skipped if not "
                                                             "given)")
    parser.add_argument("--hfs-repo", type=Path, help="a checkout of facebookresearch/disentangling-correlated-factors "
                                                       "(skipped if not given)")
    parser.add_argument("--peer-python", default=sys.executable,
                        help="the Python that runs the peers (a venv with their packages; default: this one)")
    parser.add_argument("--fashion-root", type=Path, default=Path(DEBIAN_ROOT), help="Fashion-MNIST's IDX files")
    parser.add_argument("--work-dir", type=Path, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--steps", type=int, default=1001, help="XRM recipe: steps of every run (default 1001)")
    parser.add_argument("--hparam-sets", type=int, default=3, help="XRM recipe: draws per phase (default 3)")
    parser.add_argument("--seeds", type=int, default=1, help="XRM recipe: seeds 0..N-1 on both sides, a parity table "
                                                             "of test worst-class accuracy (default 1)")
    parser.add_argument("--domainbed-steps", type=int, default=101, help="DomainBed trial steps (default 101)")
    parser.add_argument("--hfs-steps", type=int, default=2000, help="HFS comparison: training steps (default 2000)")
    parser.add_argument("--hfs-train", type=int, default=12800,
                        help="HFS comparison: training images (default 12800: 200 steps per epoch)")
    parser.add_argument("--hfs-test", type=int, default=1000, help="HFS comparison: test images scored (default 1000)")
    parser.add_argument("--hfs-independent", action="store_true",
                        help="HFS comparison: independent training factors (default: posX-posY correlated, sigma 0.1)")
    parser.add_argument("--hfs-init", choices=INITS, default=INITS[0],
                        help="HFS comparison: our VAE's initialisation (algorithm.hparams.init: kaiming, the "
                             "peer's and our default, or default, PyTorch's)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; each runs both sides, the peer first in "
                                                              "even rounds, ours first in odd ones")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for both sides (default 1)")
    parser.add_argument("--smoke", action="store_true", help=f"our side alone at a tiny size, on random images: "
                                                             f"{SMOKE}, {SMOKE_SIZES} examples")
    args = parser.parse_args()
    peers = (args.xrm_repo, args.domainbed_repo, args.hfs_repo)
    if args.smoke:
        if any(peers):
            parser.error("--smoke runs our side alone: leave out --xrm-repo, --domainbed-repo and --hfs-repo")
        vars(args).update(SMOKE)
    elif not any(peers):
        parser.error("give --xrm-repo, --domainbed-repo and/or --hfs-repo (or --smoke)")
    for name in ("seeds", "rounds", "hparam_sets", "hfs_test"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    for option, repo, entry in (("--xrm-repo", args.xrm_repo, "main.py"), ("--hfs-repo", args.hfs_repo, "base_main.py"),
                                ("--domainbed-repo", args.domainbed_repo, "domainbed/scripts/train.py")):
        if repo is not None and not (repo / entry).is_file():
            parser.error(f"{option} {repo}: no {entry} there; give a checkout of that repository")
    if (args.hfs_repo or args.smoke) and (problem := _hfs_peer.size_problem(args.hfs_steps, args.hfs_train)):
        parser.error(problem)
    torch.set_num_threads(args.threads)  # our side of the HFS comparison runs in this process
    threadpool_limits(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="vs_peers_"))
    xrm_sizes, domainbed_sizes = (SMOKE_SIZES, SMOKE_SIZES) if args.smoke else (XRM_SIZES, DOMAINBED_SIZES)
    comparisons = []  # (name, the peer's side (None under --smoke), ours)
    ratios, ours_alone, hfs = {}, {}, {}
    try:
        if args.xrm_repo or args.domainbed_repo or args.smoke:
            fashion_root = random_fashion(work / "random_fashion", sum(SMOKE_SIZES[:2]), SMOKE_SIZES[2]) \
                if args.smoke else args.fashion_root
            data = prepare_data(fashion_root, work)
        if args.xrm_repo or args.smoke:
            peer = None if args.smoke else lambda f: xrm_peer(args.xrm_repo, args.peer_python, data, f, args, env)
            comparisons.append(("xrm_end_to_end", peer, lambda f: xrm_ours(data, f, args, env, xrm_sizes)))
        if args.domainbed_repo or args.smoke:
            peer = None if args.smoke else \
                lambda f: domainbed_peer(args.domainbed_repo, args.peer_python, data, f, args, env)
            comparisons.append(("domainbed_erm_trial", peer,
                                lambda f: domainbed_ours(data, f, args, env, domainbed_sizes)))
        for name, peer, ours in comparisons:
            walls: dict[str, list[float]] = {"peer": [], "ours": []}
            per_seed: dict[str, list[dict]] = {}
            for r in range(args.rounds):
                sides = [("peer", peer), ("ours", ours)] if peer else [("ours", ours)]
                for side, run in sides if r % 2 == 0 else sides[::-1]:
                    wall, acc = run(work / f"{name}-{side}{r}")
                    walls[side].append(wall)
                    per_seed[side] = acc
                    print(f"{name} round {r} {side}: {wall:.1f} s, {show(acc)}", flush=True)
            if peer:
                ratios[name] = float(np.median(walls["peer"]) / np.median(walls["ours"]))
                print(f"{name}: median peer {np.median(walls['peer']):.1f} s, ours {np.median(walls['ours']):.1f} s")
                if name == "xrm_end_to_end":
                    parity(per_seed)
            else:
                ours_alone[name] = float(np.median(walls["ours"]))
                print(f"{name}: median ours {ours_alone[name]:.1f} s (no peer)")
        if args.hfs_repo or args.smoke:
            hfs = _hfs_peer.compare(args.hfs_repo, args.peer_python, work, args.hfs_steps, args.hfs_train,
                                   args.hfs_test, not args.hfs_independent, args.rounds, 0, args.hfs_init, env)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    for name, ratio in ratios.items():
        print(f"ratio ({name}): {ratio:.2f}")
    for method, value in hfs.items():
        if args.hfs_repo:
            print(f"ratio (hfs {method}, per step): {value:.2f}")
        else:
            print(f"hfs {method}: ours {1e3 * value:.1f} ms per step (no peer)")
    if args.smoke:
        print("smoke, no peers: the ratio below is our XRM recipe's wall over our ERM trial's")
        print(f"ratio: {ours_alone['xrm_end_to_end'] / ours_alone['domainbed_erm_trial']:.2f}")
    elif args.hfs_repo:  # one ratio line per method, the last one bare
        print(f"ratio: {hfs['beta_vae_hfs']:.2f}")
    else:
        print(f"ratio: {ratios.get('xrm_end_to_end', ratios.get('domainbed_erm_trial')):.2f}")


if __name__ == "__main__":
    main()
