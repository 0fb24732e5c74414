"""What XRM's twins cost: an XRM discovery against an ERM run of the same steps.

Same dataset, backbone, batch size, steps and evaluation schedule; the two are run alternately,
several rounds, in one process, and the medians compared. XRM's time is the whole of
``harness.runs.discovery.discover`` (training both twins, evaluating, inferring the environments of
train and val, writing the report); ERM's the whole of ``harness.runs.run.train``. The training loops
alone (their per-evaluation ``train_seconds``) are compared too. Last line:
``ratio: <XRM discovery wall time over ERM's>`` (target <= 2.2).

    python benchmarks/xrm_cost.py [--dataset colored_fashion_mnist] [--steps 1000] [--rounds 3] [--smoke]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from _sizing import parse
from harness.core import config
from harness.core.files import read_jsonl
from harness.runs.discovery import discover
from harness.runs.run import train

# --smoke: seconds, the same path (on colored_digits, which needs no download)
SMOKE = {"dataset": "colored_digits", "steps": 4, "eval_every": 2, "batch_size": 16, "rounds": 1}


def timed(fn, cfg: dict) -> tuple[float, float]:
    """(wall seconds, training-loop seconds) of one run."""
    start = time.perf_counter()
    out = fn(cfg, progress=False)
    wall = time.perf_counter() - start
    return wall, sum(r["train_seconds"] for r in read_jsonl(out / "results.jsonl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="colored_fashion_mnist")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parse(parser, SMOKE)
    common = [f"dataset.name={args.dataset}", f"steps={args.steps}", f"eval_every={args.eval_every}",
              f"algorithm.hparams.batch_size={args.batch_size}", "device=cpu", "groups=none",
              f"threads={args.threads}"]
    walls: dict[str, list[float]] = {"xrm": [], "erm": []}
    loops: dict[str, list[float]] = {"xrm": [], "erm": []}
    with tempfile.TemporaryDirectory() as tmp:
        train(config.load(None, [*common, f"run_dir={tmp}/warmup", "steps=20"]), progress=False)
        for r in range(args.rounds):
            for name, fn in (("erm", train), ("xrm", discover)):
                cfg = config.load(None, [*common, f"algorithm.name={name}", f"run_dir={tmp}/{name}{r}"])
                wall, loop = timed(fn, cfg)
                walls[name].append(wall)
                loops[name].append(loop)
            print(f"round {r}: XRM discovery {walls['xrm'][-1]:.1f} s (loop {loops['xrm'][-1]:.1f} s), "
                  f"ERM {walls['erm'][-1]:.1f} s (loop {loops['erm'][-1]:.1f} s)")
    wall = {k: statistics.median(v) for k, v in walls.items()}
    loop = {k: statistics.median(v) for k, v in loops.items()}
    print(f"median over {args.rounds} rounds, {args.steps} steps on {args.dataset}: XRM discovery {wall['xrm']:.1f} s, "
          f"ERM {wall['erm']:.1f} s; training loops alone {loop['xrm']:.1f} s vs {loop['erm']:.1f} s "
          f"(x{loop['xrm'] / loop['erm']:.2f})")
    print(f"ratio: {wall['xrm'] / wall['erm']:.3f}")


if __name__ == "__main__":
    main()
