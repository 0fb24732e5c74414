"""``harness quickstart``: the worst-group leaderboard on colored_digits, end to end."""
from __future__ import annotations

import argparse
import time

from harness import quickstart
from harness.commands.leaderboard import submit
from harness.core import config as configs
from harness.core import files
from harness.core.errors import HarnessError
from harness.leaderboards import board as boards
from harness.sweeps import sweep
from harness.sweeps.launch import details, launch, summary

HELP = f"""\
Sweep ERM and GroupDRO with annotated groups, and JTT and GroupDRO on XRM's discovered groups
without any annotation, on {quickstart.DATASET}, {quickstart.SEEDS} seeds, on worker processes; then
write the entries of the worst-group smoke board (worst_group_smoke) from the sweep and print it.

  harness quickstart                       # about a minute on 2 cores
  harness quickstart --workers 4
  harness quickstart --dir runs/qs2 --steps 300 --hparam-draws 2

Rerunning resumes: finished trials are skipped. Files: the sweep folder (one run per trial:
config, results, predictions, checkpoint), and the board's entries and markdown table in
<sweep folder>/board (the board shipped with the package is never written)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="runs/quickstart", help="sweep folder (default runs/quickstart)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--launcher", help="instead of processes:<workers>: local, processes:N, slurm, or a YAML "
                                      "mapping {name: slurm, partition: ..., time_min: ...}")
    p.add_argument("--steps", type=int, default=600, help="training steps per trial (default 600)")
    p.add_argument("--hparam-draws", type=int, default=3,
                   help="hparam draws per algorithm; draw 0 is the defaults (default 3)")
    p.add_argument("--board-dir", help="board folder for the entries and table (default: <sweep folder>/board)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.workers < 1:
        raise HarnessError(f"--workers must be >= 1, got {args.workers}")
    folder = files.folder_arg(args.dir, "--dir")
    board_dir = files.folder_arg(args.board_dir, "--board-dir") if args.board_dir is not None else folder / "board"
    board = boards.load_board("worst_group_smoke", board_dir)
    launcher = configs.parse_value(args.launcher) if args.launcher else f"processes:{args.workers}"
    spec = sweep.parse_spec(quickstart.spec(args.steps, args.hparam_draws, launcher))
    names = [f"{a.algorithm} ({a.point['groups']} groups)" for a in spec.arms]
    print(f"quickstart: {', '.join(names)} on {quickstart.DATASET}; {args.hparam_draws} hparam draw(s) x "
          f"{quickstart.SEEDS} seeds, {args.steps} steps each; launcher {spec.launcher}")
    report = launch(spec, folder)
    print(f"sweep: {summary(report)}")
    for line in details(report, folder):
        print(line)
    if not report.ok:
        print(f"some trials did not finish: `harness sweep status {folder}`; rerun `harness quickstart` to resume")
    submit(board, str(folder), "harness quickstart")
    print()
    print(board.table_path.read_text())
    print("files:")
    print(f"  sweep (one folder per trial):  {folder}   ->  harness sweep status {folder}")
    print(f"  all rules, as tables:          harness collect {folder}")
    print(f"  board entries:                 {board.entries_dir}")
    print(f"  board table:                   {board.table_path}")
    print(f"  check the entries:             harness leaderboard verify {board.name} --board-dir {board.dir}")
    print(f"wall time: {time.perf_counter() - start:.0f} s")
    return 0 if report.ok else 1
