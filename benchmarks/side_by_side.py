"""The driver the loop-overhead benchmarks share: the harness and a hand-written loop, alternated
over several rounds in one process, medians compared; the last line is ``ratio: <ours / theirs>``.
``--smoke`` runs both for a few steps, one round: seconds, the same path."""
from __future__ import annotations

import argparse
import statistics
import tempfile
from typing import Callable

import torch

from _sizing import parse
from harness.core import config
from harness.core.files import read_jsonl
from harness.runs.run import train

SMOKE = {"steps": 3, "rounds": 1, "batch_size": 16}


def harness_rate(folder: str, steps: int, batch_size: int, *overrides: str) -> float:
    """Examples per second of one run through the harness, from its own ``train_seconds``
    (evaluation excluded, as a hand-written loop does none)."""
    cfg = config.load(None, [f"run_dir={folder}", f"steps={steps}", f"eval_every={steps}",
                             f"algorithm.hparams.batch_size={batch_size}", "device=cpu",
                             f"threads={torch.get_num_threads()}", *overrides])
    run = train(cfg, progress=False)
    return steps * batch_size / sum(r["train_seconds"] for r in read_jsonl(run / "results.jsonl"))


def main(description: str, harness_loop: Callable[[int, int, str], float], hand_written: Callable[[int, int], float],
         steps: int, batch_size: int, warmup: int, report: Callable[[], None] | None = None) -> None:
    """``harness_loop(steps, batch size, folder)`` and ``hand_written(steps, batch size)`` each
    return examples per second; ``report`` prints what else was measured, before the ratio."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    args = parse(parser, SMOKE)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        harness_loop(min(warmup, args.steps), args.batch_size, f"{tmp}/warmup")
        for r in range(args.rounds):
            theirs.append(hand_written(args.steps, args.batch_size))
            ours.append(harness_loop(args.steps, args.batch_size, f"{tmp}/round{r}"))
            print(f"round {r}: harness {ours[-1]:,.0f} ex/s, hand-written {theirs[-1]:,.0f} ex/s")
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"median: harness {a:,.0f} ex/s, hand-written {b:,.0f} ex/s")
    if report is not None:
        report()
    print(f"ratio: {a / b:.3f}")
