"""Environment discovery without annotations: XRM + GroupDRO against GroupDRO on human groups.

For each dataset:

1. XRM's hyperparameters by its own annotation-free recipe: discoveries with hyperparameter
   draws 0..K-1 (0 = the defaults) at seed 0; the draw whose discovery ends with the largest
   flip rate (``harness.discovery.best_discovery``) is used for every seed.
2. For each seed: the XRM discovery of that draw; a JTT error-set discovery (``jtt_errors``,
   T = the same steps); ERM; GroupDRO on annotated groups; GroupDRO on the XRM groups and on
   the JTT groups of the same seed; the full JTT method.
3. Tables: test accuracies (mean ± standard error over seeds) of the checkpoint each method's
   selection rule picks, and the discovered groups' agreement with the annotations.

The XRM + GroupDRO row uses no annotation anywhere: discovery, its hyperparameter choice and
model selection (validation worst-group accuracy on the *inferred* validation groups). Test
metrics always use the true annotations. Runs are ordinary run folders under ``--out``;
rerunning skips finished ones.

    python experiments/discovery_table.py [--jobs 2] [--seeds 3] [--xrm-draws 6] [--steps 2000]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tabulate import tabulate

from harness.discovery import best_discovery
from harness.environments import read_report
from harness.metrics import mean_and_stderr

DATASETS = ("colored_fashion_mnist", "background_fashion_mnist")


def execute(kind: str, overrides: list[str]) -> tuple[str, float]:
    """One run in a worker process: (run folder, wall seconds)."""
    import torch

    from harness import config
    from harness.discovery import discover
    from harness.run import train

    torch.set_num_threads(1)
    start = time.perf_counter()
    out = (discover if kind == "discover" else train)(config.load(None, overrides), progress=False)
    return str(out), time.perf_counter() - start


def run_all(pool: ProcessPoolExecutor, jobs: dict[str, tuple[str, list[str]]]) -> dict[str, tuple[str, float]]:
    futures = {name: pool.submit(execute, kind, overrides) for name, (kind, overrides) in jobs.items()}
    return {name: f.result() for name, f in futures.items()}


def summary(run: str, rule: str) -> dict:
    return json.loads((Path(run) / "summary.json").read_text())[rule]


def mean_se(values: list[float]) -> str:
    mean, se = mean_and_stderr(values)
    return f"{100 * mean:.1f} ± {100 * se:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--xrm-draws", type=int, default=6, help="XRM hyperparameter draws compared by flip rate")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each on one thread)")
    parser.add_argument("--out", default="runs/discovery_table")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    seconds: list[float] = []
    results, agreement = [], []
    with ProcessPoolExecutor(args.jobs) as pool:
        for dataset in args.datasets:
            base = [f"dataset.name={dataset}", f"steps={args.steps}", f"eval_every={args.eval_every}",
                    f"output_dir={args.out}/{dataset}"]
            xrm = [*base, "algorithm.name=xrm", "groups=none"]
            draws = run_all(pool, {str(k): ("discover", [*xrm, f"algorithm.hparams_seed={k}", "seed=0"])
                                   for k in range(args.xrm_draws)})
            seconds += [s for _, s in draws.values()]
            best = str(best_discovery([run for run, _ in draws.values()]))
            draw = next(k for k, (run, _) in draws.items() if run == best)
            flip_rates = {int(k): round(read_report(run)["flip_rate"], 4) for k, (run, _) in draws.items()}
            print(f"{dataset}: XRM final flip rate by hyperparameter draw {flip_rates}; kept draw {draw}", flush=True)
            jobs: dict[str, tuple[str, list[str]]] = {}
            for seed in range(args.seeds):
                jobs[f"xrm{seed}"] = ("discover", [*xrm, f"algorithm.hparams_seed={draw}", f"seed={seed}"])
                jobs[f"jtt_errors{seed}"] = ("discover", [*base, "algorithm.name=jtt_errors", "groups=none",
                                                          f"seed={seed}"])
                jobs[f"erm{seed}"] = ("train", [*base, "algorithm.name=erm", "groups=none", f"seed={seed}"])
                jobs[f"dro_annotated{seed}"] = ("train", [*base, "algorithm.name=group_dro", f"seed={seed}"])
                jobs[f"jtt{seed}"] = ("train", [*base, "algorithm.name=jtt", "groups=none", f"seed={seed}"])
            done = run_all(pool, jobs)
            jobs = {f"dro_{method}{seed}": ("train", [*base, "algorithm.name=group_dro", f"seed={seed}",
                                                      f"groups=inferred:{done[f'{method}{seed}'][0]}"])
                    for seed in range(args.seeds) for method in ("xrm", "jtt_errors")}
            done.update(run_all(pool, jobs))
            seconds += [s for _, s in done.values()]
            rows = [
                ("ERM", "none", "val-avg", "erm"),
                ("ERM", "none", "val-wga", "erm"),
                ("GroupDRO", "annotated", "val-wga", "dro_annotated"),
                ("GroupDRO", "XRM (inferred)", "val-wga-inferred", "dro_xrm"),
                ("GroupDRO", "JTT errors (inferred)", "val-wga-inferred", "dro_jtt_errors"),
                ("JTT", "none", "val-wga", "jtt"),
            ]
            for method, groups, rule, key in rows:
                picked = [summary(done[f"{key}{s}"][0], rule) for s in range(args.seeds)]
                results.append([dataset, method, groups, rule, mean_se([p["worst_group_acc"] for p in picked]),
                                mean_se([p["avg_acc"] for p in picked])])
            for method in ("xrm", "jtt_errors"):
                reports = [read_report(done[f"{method}{s}"][0]) for s in range(args.seeds)]
                for split in ("train", "val"):
                    a = [r["annotation_agreement"][split] for r in reports]
                    agreement.append([dataset, method, split] + [mean_se([x[k] for x in a]) for k in
                                                                 ("accuracy", "ari", "minority_precision",
                                                                  "minority_recall")])
    print()
    print(tabulate(results, headers=["dataset", "method", "training groups", "selection", "test worst-group acc",
                                     "test avg acc"], tablefmt="github"))
    print()
    print("Discovered environments against the annotated minority (a diagnostic, used nowhere):")
    print(tabulate(agreement, headers=["dataset", "discovery", "split", "accuracy", "ARI", "minority precision",
                                       "minority recall"], tablefmt="github"))
    print(f"\n{len(seconds)} runs; wall seconds per run: median {sorted(seconds)[len(seconds) // 2]:.0f}, "
          f"max {max(seconds):.0f} (finished runs are skipped, so rerun times are short)")


if __name__ == "__main__":
    main()
