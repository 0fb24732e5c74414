"""``harness collect SWEEP_DIR``: tables of a sweep, recomputed from its stored predictions."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.core import files
from harness.core.errors import HarnessError, unknown
from harness.protocols.base import protocol
from harness.reports import collect
from harness.reports.tables import FORMATS, summary_tables
from harness.sweeps.sweep import SPEC_FILE

HELP = """\
Read every finished run of a sweep folder (or any folder of runs), recompute every metric of
every evaluated checkpoint from its stored predictions with the run's protocol, apply selection
rules and aggregate seeds.

  harness collect sweeps/demo                          # all rules, markdown
  harness collect sweeps/demo --rule val-wga --format latex
  harness collect sweeps/demo --format csv --output results.csv
  harness collect sweeps/demo --frame checkpoints.csv  # the raw frame: one row per run × checkpoint

Selection, per algorithm × dataset × the protocol's own columns (worst-group: group source and
arm): in every run, the checkpoint the rule prefers (earliest on ties); then the hparam draw
whose selected checkpoints have the best mean over seeds. Reported: test metrics at those
checkpoints, mean ± standard error over seeds and a 95% percentile-bootstrap interval of the mean.
Runs of several protocols give one set of tables per protocol. Each protocol's rules (worst-group:
oracle, val-wga, val-wga-inferred, val-worst-class, val-avg) and metrics: `harness list protocols`."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep folder or any folder of run folders")
    p.add_argument("--rule", action="append", metavar="RULE", help="selection rule (repeatable; default: all of "
                   "the protocol's)")
    p.add_argument("--metric", action="append", metavar="SPLIT.METRIC",
                   help="reported metric (repeatable; default: the protocol's, e.g. test.worst_group_acc, and the "
                        "headline metric a dataset names, e.g. CivilComments' overlapping worst group)")
    p.add_argument("--format", default="markdown", choices=FORMATS, help="table format (default markdown)")
    p.add_argument("--output", metavar="FILE", help="write the tables to FILE instead of printing them")
    p.add_argument("--frame", metavar="FILE.csv", help="also write the run × checkpoint frame as CSV")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    files.folder_arg(args.sweep_dir, "SWEEP_DIR", must_exist=True)
    for option, value in (("--output", args.output), ("--frame", args.frame)):
        if value is not None:
            files.file_arg(value, option)
    done, unfinished = collect.run_folders(args.sweep_dir)
    done, left_out = collect.vet(done, named_by_hash=(Path(args.sweep_dir) / SPEC_FILE).exists())
    for line in left_out:
        print(f"harness: warning: {line}", file=sys.stderr)
    if not done:
        raise HarnessError(f"no finished run in {args.sweep_dir!r}"
                           + (f" ({len(unfinished)} unfinished; run the sweep again to finish them)" if unfinished else ""))
    frame = collect.load_runs(done)
    scorers = [protocol(name) for name in frame["protocol"].unique()]
    for scorer in scorers:  # checked before anything is written
        for rule in args.rule or []:
            scorer.rule(rule)
        for metric in args.metric or []:
            if metric not in scorer.metric_columns():
                raise unknown(f"metric of protocol {scorer.name}", metric, scorer.metric_columns())
    if args.frame:
        files.write_text(args.frame, frame.to_csv(index=False))
    parts = []
    for scorer in scorers:
        headlines = collect.headline_metrics(done, scorer)  # a dataset's official metric, where it names one
        rules = args.rule or [r.name for r in scorer.rules]
        metrics = args.metric or list(dict.fromkeys([*scorer.reported, *headlines]))
        summary = collect.summarize(frame, scorer, rules, metrics)
        text = summary_tables(summary, scorer, metrics, args.format) if len(summary) else "no run answers these rules\n"
        parts.append(text if len(scorers) == 1 else f"## protocol {scorer.name}\n\n{text}")
    text = "\n".join(parts)
    if args.output:
        files.write_text(args.output, text)
    else:
        print(text, end="")
    note = f"{len(done)} finished runs, {len(frame)} checkpoints, every number recomputed from predictions"
    if unfinished:
        note += f"; {len(unfinished)} unfinished run(s) left out"
    if left_out:
        note += f"; {len(left_out)} finished run(s) left out (named above)"
    print(note + (f"; tables in {Path(args.output)}" if args.output else ""), file=sys.stderr)
    return 0
