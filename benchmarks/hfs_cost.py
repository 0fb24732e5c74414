"""What the HFS term costs: a β-VAE training step with it (``beta_vae_hfs``) over one without
(``beta_vae``), on the same procedural-dSprites batch.

Both models start from the same seed; each round times ``--steps`` updates of one, then of the
other, in one process, and the medians over rounds are compared. The HFS term is computed on the
batch's posterior means over ``--pairs`` latent pairs (B³·pairs distances). Last line:
``ratio: <step time with HFS over without>`` (target <= 1.5).

    python benchmarks/hfs_cost.py [--batch-size 64] [--pairs 25] [--steps 10] [--rounds 5] [--smoke]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from _sizing import parse
from harness.core.registry import ALGORITHMS, DATASETS

SMOKE = {"batch_size": 8, "pairs": 3, "steps": 1, "rounds": 1}  # --smoke: seconds, the same path


def step_seconds(algo: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    start = time.perf_counter()
    for step in range(steps):
        algo.update(x, step)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=25)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parse(parser, SMOKE)
    data = DATASETS.get("procedural_dsprites").obj(n_train=args.batch_size, n_val=1, n_test=1, n_shift=1)
    x = data.splits["train"].inputs(torch.arange(args.batch_size))
    algos = {}
    for name in ("beta_vae", "beta_vae_hfs"):
        entry = ALGORITHMS.get(name)
        hparams = {k: hp.default for k, hp in entry.hparams.items()}
        hparams.update(batch_size=args.batch_size, **({"hfs_pairs": args.pairs} if "hfs_pairs" in hparams else {}))
        torch.manual_seed(0)
        algos[name] = entry.obj(data.input_shape, hparams, len(x)).train()
        step_seconds(algos[name], x, 2)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in algos}
    for r in range(args.rounds):
        for name, algo in algos.items():
            times[name].append(step_seconds(algo, x, args.steps))
        print(f"round {r}: without HFS {1e3 * times['beta_vae'][-1]:.1f} ms/step, "
              f"with HFS {1e3 * times['beta_vae_hfs'][-1]:.1f} ms/step")
    plain, hfs = statistics.median(times["beta_vae"]), statistics.median(times["beta_vae_hfs"])
    print(f"median over {args.rounds} rounds of {args.steps} steps, batch {args.batch_size}, {args.pairs} of 45 pairs, "
          f"{args.threads} thread(s): {1e3 * plain:.1f} ms without HFS, {1e3 * hfs:.1f} ms with")
    print(f"ratio: {hfs / plain:.3f}")


if __name__ == "__main__":
    main()
