"""Examples per second of a data-parallel SimCLR run on 2 ranks over the same run on 1, on this
machine (gloo, CPU, one thread per rank).

The same config for both (``batch_size`` is the global batch, so each of 2 ranks computes half):
colored_digits, the default MLP, a 2-layer projector, Gaussian-noise views. Throughput is rank
0's ``train_seconds`` (evaluation excluded; it includes waiting for the other rank's gradients
and gathers). Runs alternate, several rounds; medians. Last line: ``ratio: <2 ranks / 1>`` (the
speedup).

    python benchmarks/ddp_scaling.py [--steps 300] [--rounds 3] [--batch-size 512] [--smoke]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from _sizing import parse
from harness.core import config
from harness.core.files import read_jsonl
from harness.runs import distributed
from harness.runs.run import train

SMOKE = {"steps": 3, "rounds": 1, "batch_size": 32}  # --smoke: seconds, the same path


def cfg_of(folder: str, steps: int, batch_size: int) -> dict:
    """The run's config; one torch thread in every rank."""
    return config.load(None, [f"run_dir={folder}", f"steps={steps}", f"eval_every={steps}", "algorithm.name=simclr",
                              f"algorithm.hparams.batch_size={batch_size}", "device=cpu", "threads=1"])


def rate(folder: str, steps: int, batch_size: int) -> float:
    return steps * batch_size / sum(r["train_seconds"] for r in read_jsonl(f"{folder}/results.jsonl"))


def _ranked(cfg: dict) -> None:
    train(cfg, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    args = parse(parser, SMOKE, threads=False)
    torch.set_num_threads(1)
    one, two = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            train(cfg_of(f"{tmp}/one{r}", args.steps, args.batch_size), progress=False)
            one.append(rate(f"{tmp}/one{r}", args.steps, args.batch_size))
            distributed.spawn(_ranked, 2, cfg_of(f"{tmp}/two{r}", args.steps, args.batch_size))
            two.append(rate(f"{tmp}/two{r}", args.steps, args.batch_size))
            print(f"round {r}: 1 rank {one[-1]:,.0f} ex/s, 2 ranks {two[-1]:,.0f} ex/s")
    a, b = statistics.median(one), statistics.median(two)
    print(f"median: 1 rank {a:,.0f} ex/s, 2 ranks {b:,.0f} ex/s")
    print(f"ratio: {b / a:.2f}")


if __name__ == "__main__":
    main()
