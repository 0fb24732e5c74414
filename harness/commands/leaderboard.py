"""``harness leaderboard submit|verify|render``: entries from sweeps, checked against their
stored predictions, rendered to markdown."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.core import files
from harness.core.errors import HarnessError
from harness.leaderboards import board as boards

HELP = """\
A board (leaderboards/<board>.yaml) names its datasets, its selection rule for each group source,
its metrics and the seeds an entry needs. One JSON entry per (algorithm, group source) lives in
leaderboards/entries/<board>/, with provenance (config hashes of every candidate run, the chosen
runs and checkpoints, seeds, code version).

  harness leaderboard submit sweeps/demo            # entries for every (algorithm, group source) of a sweep,
                                                    # then the table is rendered
  harness leaderboard verify                        # recompute every entry from its runs' predictions
  harness leaderboard verify --runs sweeps/demo     # ... with the runs in another folder
  harness leaderboard render                        # leaderboards/<board>.md from the entries

verify exits 2 and lists every difference when an entry's numbers, chosen runs or checkpoints
are not what the stored predictions give."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="submit sweep results to a board, verify entries, render the table",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("submit", "write entries from a sweep folder, then render"),
                       ("verify", "recompute entries from their runs' stored predictions"),
                       ("render", "write the markdown table from the entries")):
        a = actions.add_parser(name, help=text, description=text)
        if name == "submit":
            a.add_argument("sweep_dir", metavar="SWEEP_DIR")
        a.add_argument("--board", default="worst_group", help="board name (default worst_group)")
        a.add_argument("--board-dir", default=str(boards.BOARD_DIR),
                       help="folder of the board definition, entries and table (default: the installed leaderboards/)")
        if name == "verify":
            a.add_argument("--runs", metavar="DIR", help="folder holding the listed runs (default: each entry's sweep)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    board = boards.load_board(args.board, args.board_dir)
    if args.action == "submit":
        return submit(board, args.sweep_dir, f"harness leaderboard submit {args.sweep_dir}")
    if args.action == "verify":
        entries = boards.load_entries(board)
        if not entries:
            raise HarnessError(f"board {board.name!r} has no entries in {board.entries_dir}")
        failures = []
        for entry in entries:
            diffs = boards.verify(board, entry, args.runs)
            print(f"{'ok  ' if not diffs else 'FAIL'} {entry['algorithm']} ({entry['groups']})  {entry['_path']}")
            failures += [f"{entry['_path']}: {d}" for d in diffs]
        if failures:
            raise HarnessError(f"{len(failures)} difference(s) between entries and their runs' predictions:\n  "
                               + "\n  ".join(failures))
        print(f"{len(entries)} entries verified: every number recomputed from stored predictions")
        return 0
    path = write_table(board)
    print(f"wrote {path}")
    return 0


def submit(board: boards.Board, sweep_dir: str, produced_by: str) -> int:
    entries, skipped = boards.build_entries(board, sweep_dir, produced_by)
    for line in skipped:
        print(f"not entered: {line}")
    if not entries:
        raise HarnessError(f"no (algorithm, group source) of {sweep_dir!r} meets board {board.name!r}")
    for path in boards.write_entries(board, entries):
        print(f"entry: {path}")
    print(f"table: {write_table(board)}")
    return 0


def write_table(board: boards.Board) -> Path:
    files.write_text(board.table_path, boards.render(board, boards.load_entries(board)))
    return board.table_path
