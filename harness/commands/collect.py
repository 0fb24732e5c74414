"""``harness collect SWEEP_DIR``: tables of a sweep, recomputed from its stored predictions."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.core import files
from harness.core.errors import HarnessError, unknown
from harness.protocols.selection import RULES
from harness.reports import collect
from harness.reports.tables import FORMATS, summary_tables

HELP = """\
Read every finished run of a sweep folder (or any folder of runs), recompute every metric of
every evaluated checkpoint from its stored predictions, apply selection rules and aggregate seeds.

  harness collect sweeps/demo                          # all rules, markdown
  harness collect sweeps/demo --rule val-wga --format latex
  harness collect sweeps/demo --format csv --output results.csv
  harness collect sweeps/demo --frame checkpoints.csv  # the raw frame: one row per run × checkpoint

Selection, per (algorithm, dataset, group source): in every run, the checkpoint that maximises the
rule's metric (earliest on ties); then the hparam draw whose selected checkpoints have the best
mean over seeds. Reported: test metrics at those checkpoints, mean ± standard error over seeds
and a 95% percentile-bootstrap interval of the mean.

Rules: """ + "; ".join(f"{name}: {split} {metric} ({needs})" for name, (split, metric, needs) in RULES.items())


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help="tables from a sweep, recomputed from stored predictions",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep folder or any folder of run folders")
    p.add_argument("--rule", action="append", metavar="RULE", help=f"selection rule (repeatable; default all): "
                   f"{', '.join(RULES)}")
    p.add_argument("--metric", action="append", metavar="SPLIT.METRIC",
                   help=f"reported metric (repeatable; default {', '.join(collect.DEFAULT_REPORTED)}); metrics: "
                        f"{', '.join(collect.METRICS)}")
    p.add_argument("--format", default="markdown", choices=FORMATS, help="table format (default markdown)")
    p.add_argument("--output", metavar="FILE", help="write the tables to FILE instead of printing them")
    p.add_argument("--frame", metavar="FILE.csv", help="also write the run × checkpoint frame as CSV")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rules = args.rule or list(RULES)
    for rule in rules:
        if rule not in RULES:
            raise unknown("selection rule", rule, list(RULES))
    metrics = args.metric or list(collect.DEFAULT_REPORTED)
    accepted = [f"{s}.{m}" for s in collect.SPLITS for m in collect.METRICS]
    for metric in metrics:
        if metric not in accepted:
            raise unknown("metric", metric, accepted)
    done, unfinished = collect.run_folders(args.sweep_dir)
    if not done:
        raise HarnessError(f"no finished run in {args.sweep_dir!r}"
                           + (f" ({len(unfinished)} unfinished; run the sweep again to finish them)" if unfinished else ""))
    frame = collect.load_runs(done)
    if args.frame:
        files.write_text(args.frame, frame.to_csv(index=False))
    summary = collect.summarize(frame, rules, metrics)
    text = summary_tables(summary, metrics, args.format) if len(summary) else "no run answers these rules\n"
    if args.output:
        files.write_text(args.output, text)
    else:
        print(text, end="")
    note = f"{len(done)} finished runs, {len(frame)} checkpoints, every number recomputed from predictions"
    if unfinished:
        note += f"; {len(unfinished)} unfinished run(s) left out"
    print(note + (f"; tables in {Path(args.output)}" if args.output else ""), file=sys.stderr)
    return 0
