"""``harness leaderboard submit|verify|render|pictures|reproduce``: entries from sweeps, checked
against their stored predictions, rendered to markdown; ``reproduce`` runs a board's own sweep
specs first."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.core import config as configs
from harness.core import files
from harness.core.errors import HarnessError, shown
from harness.leaderboards import board as boards

HELP = """\
A board (a shipped definition such as worst_group, or a YAML file) names the protocol that scores
it, the config paths that identify an entrant, its datasets, its selection rule(s), its metrics
and the distinct seeds an entry needs. One JSON entry per entrant lives in a board folder
(<board folder>/entries/<board>/), with provenance (config hashes of every candidate run, the
chosen runs and checkpoints, seeds, code version).

  harness leaderboard verify worst_group                       # the shipped entries, from their runs
  harness leaderboard verify worst_group --runs runs/quickstart
  harness leaderboard submit worst_group sweeps/demo --board-dir myboard   # entries + table in myboard/
  harness leaderboard verify worst_group --board-dir myboard
  harness leaderboard render worst_group                       # print the shipped table
  harness leaderboard render worst_group --board-dir myboard   # write myboard/worst_group.md
  harness leaderboard pictures disentanglement --board-dir myboard   # each entry's first run, drawn by
                                                  # its protocol, into myboard/pictures/<board>/
  harness leaderboard reproduce worst_group        # run the board's sweep specs into sweeps/<spec name>,
                                                  # enter, verify and render into sweeps/<spec name>/board
  harness leaderboard reproduce worst_group --launcher processes:4 --sweep-dir /scratch/wg
  harness leaderboard reproduce worst_group --board-dir harness/leaderboards   # rewrite the shipped entries (maintainers)

Nothing is written into the shipped board unless its folder is named with --board-dir (the
project's maintainers do so, from a checkout: --board-dir harness/leaderboards). verify exits 2 and lists
every difference when an entry's numbers, chosen runs or checkpoints are not what the stored
predictions give."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("submit", "write entries from a sweep folder into a board folder, then its table"),
                       ("verify", "recompute entries from their runs' stored predictions"),
                       ("render", "the markdown table from the entries (printed, or written into --board-dir)"),
                       ("pictures", "draw each entry's first chosen run (reconstructions, traversals) as a PNG"),
                       ("reproduce", "run the board's sweep specs, then submit, verify and render, with the wall time")):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("board", metavar="BOARD", help="a shipped board's name (e.g. worst_group) or a definition .yaml")
        if name == "submit":
            a.add_argument("sweep_dir", metavar="SWEEP_DIR")
        default = {"submit": "", "reproduce": " (default: <sweep folder>/board; the shipped one only if named)"}
        a.add_argument("--board-dir", required=name == "submit", metavar="DIR",
                       help="board folder holding entries/<board>/ and <board>.md"
                            + default.get(name, " (default: the shipped one)"))
        if name in ("verify", "pictures"):
            a.add_argument("--runs", metavar="DIR", help="folder holding the listed runs (default: each entry's sweep)")
        if name == "reproduce":
            a.add_argument("--sweep-dir", metavar="DIR",
                           help="one sweep folder for all the board's specs (default: sweeps/<first spec's name>); rerunning "
                                "resumes: finished trials are skipped")
            a.add_argument("--launcher", help="overrides every spec's launcher: local, processes:N, slurm, or a YAML "
                                              "mapping {name: slurm, partition: ..., time_min: ...}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    checked_folders(args)
    if args.action == "reproduce":
        return reproduce(args)
    board = boards.load_board(args.board, args.board_dir)
    if args.action == "submit":
        return submit(board, args.sweep_dir, f"harness leaderboard submit {args.board} {args.sweep_dir}")
    if args.action == "verify":
        entries = boards.load_entries(board)
        if not entries:
            raise HarnessError(f"board {board.name!r} has no entries in {board.entries_dir}")
        verify_entries(board, entries, args.runs, show=True)
        print(f"{len(entries)} entries verified: every number recomputed from stored predictions")
        return 0
    if args.action == "pictures":
        paths = pictures(board, args.runs)
        if not paths:
            raise HarnessError(f"board {board.name!r} has no entries in {board.entries_dir}")
        for path in paths:
            print(f"picture: {path}")
        return 0
    if args.board_dir is None:
        print(boards.render(board, boards.load_entries(board)), end="")
        return 0
    print(f"wrote {write_table(board)}")
    return 0


def checked_folders(args: argparse.Namespace) -> None:
    """Every folder option of the action, checked before anything is read or written."""
    labels = {"board_dir": "--board-dir", "runs": "--runs",
              "sweep_dir": "SWEEP_DIR" if args.action == "submit" else "--sweep-dir"}
    for option, label in labels.items():
        value = getattr(args, option, None)
        if value is not None:
            files.folder_arg(value, label, must_exist=label == "SWEEP_DIR")


def verify_entries(board: boards.Board, entries: list[dict], runs: str | None = None, show: bool = False) -> None:
    """Recompute every entry from its runs' stored predictions (a line per entry with ``show``);
    a ``HarnessError`` listing every difference."""
    failures = []
    for entry in entries:
        diffs = boards.verify(board, entry, runs)
        if show:
            print(f"{'ok  ' if not diffs else 'FAIL'} {boards.describe(entry['entrant'])}  {entry['_path']}")
        failures += [f"{entry['_path']}: {d}" for d in diffs]
    if failures:
        raise HarnessError(f"{len(failures)} difference(s) between entries and their runs' predictions:\n  "
                           + "\n  ".join(failures))


def submit(board: boards.Board, sweep_dir: str, produced_by: str) -> int:
    entries, skipped = boards.build_entries(board, sweep_dir, produced_by)
    for line in skipped:
        print(f"not entered: {line}")
    if not entries:
        raise HarnessError(f"no entrant of {sweep_dir!r} meets board {board.name!r}")
    for path in boards.write_entries(board, entries):
        print(f"entry: {path}")
    print(f"table: {write_table(board)}")
    return 0


def reproduce(args: argparse.Namespace) -> int:
    """Run every sweep spec of the board into one sweep folder, then write its entries and table
    into the board folder, verify each entry against its runs and print the wall time."""
    from harness.sweeps import sweep
    from harness.sweeps.launch import details, launch, summary
    from harness.sweeps.launchers import override_launcher

    start = time.perf_counter()
    board = boards.load_board(args.board)
    if not board.sweeps:
        raise HarnessError(f"board {board.name!r} names no sweep specs to reproduce it from (key `sweeps` of its "
                           "definition: a list of spec paths relative to the definition's folder)")
    missing = [str(p) for p in board.sweeps if not p.is_file()]
    if missing:
        raise HarnessError(f"board {board.name!r}: sweep spec(s) not found: {', '.join(missing)}; reproduce from a "
                           "checkout of the project, where they are")
    specs = [sweep.load_spec(p) for p in board.sweeps]  # every spec checked before anything runs
    folder = Path(args.sweep_dir or Path("sweeps") / specs[0].name)
    board = boards.load_board(args.board, args.board_dir or folder / "board")
    if args.launcher:
        choice = configs.parse_value(args.launcher)
        for spec in specs:
            spec.launcher = override_launcher(spec.launcher, choice)
    ok = True
    for path, spec in zip(board.sweeps, specs):
        print(f"sweep {path} -> {folder} (launcher {spec.launcher})", flush=True)
        report = launch(spec, folder)
        print(f"sweep: {summary(report)}")
        for line in details(report, folder):
            print(line)
        ok = ok and report.ok
    if not ok:
        print(f"some trials did not finish: `harness sweep status {folder}`; rerun the same command to resume")
    submit(board, str(folder), f"harness leaderboard reproduce {args.board}")
    verify_entries(board, boards.load_entries(board))
    print(f"verified: every entry recomputed from its runs' stored predictions\n\n{board.table_path.read_text()}")
    print(f"wall time: {(time.perf_counter() - start) / 60:.1f} min")
    return 0 if ok else 1


def write_table(board: boards.Board) -> Path:
    files.write_text(board.table_path, boards.render(board, boards.load_entries(board)))
    return board.table_path


def pictures(board: boards.Board, runs_dir: str | None) -> list[Path]:
    """For each entry and dataset, its first chosen run drawn by the board's protocol, into
    ``<board folder>/pictures/<board>/<entry>--<dataset>.png``."""
    from harness.reports.pictures import run_pictures

    out = []
    for entry in boards.load_entries(board):
        where = Path(runs_dir or entry["provenance"]["sweep"])
        for dataset, result in entry["results"].items():
            if dataset not in board.datasets:  # file names come only from names the board declares
                raise HarnessError(f"leaderboard entry {entry['_path']}: result for {shown(dataset)}, not a dataset of "
                                   f"board {board.name!r} ({', '.join(board.datasets)})")
            name = f"{boards.entry_path(board, entry).stem}--{dataset}.png"
            run = files.inside(where, result["runs"][0]["hash"], what=f"run of entry {entry['_path']}")
            out.append(run_pictures(run, files.inside(board.dir / "pictures" / board.name, name, what="picture")))
    return out
