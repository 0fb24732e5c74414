"""``harness leaderboard submit|export|verify|render|page|pictures|reproduce|rerun``: entries from
sweeps or submission bundles, checked against their stored (or shipped compact) predictions,
rendered to markdown and HTML; ``reproduce`` runs a board's own sweep specs first, ``rerun``
trains one seed of an entry again and compares its predictions."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.core import config as configs
from harness.core import files
from harness.core.errors import HarnessError, shown
from harness.leaderboards import board as boards
from harness.leaderboards import bundle, levels, predictions, shipped
from harness.reports import collect

HELP = """\
A board (a shipped definition such as worst_group, or a YAML file) names the protocol that scores
it, the config paths that identify an entrant, its datasets, its selection rule(s), its metrics
and the distinct seeds an entry needs. One JSON entry per entrant lives in a board folder
(<board folder>/entries/<board>/), with provenance (config hashes of every candidate run, the
chosen runs and checkpoints, seeds, code version).

  harness leaderboard verify worst_group_smoke                 # from the entries' shipped predictions
  harness leaderboard verify transfer_best                     # every shipped board ships its predictions
  harness leaderboard verify worst_group --runs runs/quickstart
  harness leaderboard submit worst_group sweeps/demo --board-dir myboard   # entries + table in myboard/
  harness leaderboard verify worst_group --board-dir myboard
  harness leaderboard export worst_group_smoke sweeps/demo bundles/      # our runs as submission bundles
  harness leaderboard submit worst_group_smoke bundles/erm--annotated --board-dir myboard   # anyone's bundle
  harness leaderboard render worst_group                       # print the shipped table
  harness leaderboard render worst_group --html --board-dir myboard   # myboard/worst_group.html: the board's page
  harness leaderboard page --board-dir myboard                 # myboard/boards.html: every board on one page
  harness leaderboard render worst_group --board-dir myboard   # write myboard/worst_group.md
  harness leaderboard pictures disentanglement --board-dir myboard   # each entry's first run, drawn by
                                                  # its protocol, into myboard/pictures/<board>/
  harness leaderboard reproduce worst_group        # run the board's sweep specs into sweeps/<spec name>,
                                                  # enter, verify and render into sweeps/<spec name>/board
  harness leaderboard reproduce worst_group --launcher processes:4 --sweep-dir /scratch/wg
  harness leaderboard reproduce worst_group --board-dir harness/leaderboards   # rewrite the shipped entries (maintainers)
  harness leaderboard rerun worst_group_smoke erm--annotated   # train one drawn seed again (scratch folder),
                                                  # compare its predictions with the shipped ones
  harness leaderboard rerun worst_group_smoke erm--annotated --board-dir myboard   # and mark it re-run there

Nothing is written into the shipped board unless its folder is named with --board-dir (the
project's maintainers do so, from a checkout: --board-dir harness/leaderboards). verify exits 2 and lists
every difference when an entry's numbers, chosen runs or checkpoints are not what the stored
predictions give."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("submit", "write entries from a sweep folder, or one from a submission bundle (a folder with "
                                  "manifest.json, or a .zip/.tar of one), into a board folder, then its table"),
                       ("export", "write each entrant of a sweep folder that meets the board as a submission bundle"),
                       ("verify", "recompute entries from their runs' stored predictions"),
                       ("render", "the markdown table from the entries, or with --html the board's page (printed, or "
                                  "written into --board-dir)"),
                       ("pictures", "draw each entry's first chosen run (reconstructions, traversals) as a PNG"),
                       ("page", "one self-contained HTML page of the boards of a board folder (sortable, tie groups, "
                                "verification levels, provenance): <board folder>/boards.html"),
                       ("reproduce", "run the board's sweep specs, then submit, verify and render, with the wall time"),
                       ("rerun", "train one drawn seed of an entry made by the harness again (in a scratch folder) and "
                                 "compare its predictions with the stored ones; with --board-dir, mark it re-run there")):
        a = actions.add_parser(name, help=text, description=text)
        if name == "page":
            a.add_argument("board", metavar="BOARD", nargs="*",
                           help="boards to show (default: every board with entries in the board folder)")
        else:
            a.add_argument("board", metavar="BOARD", help="a shipped board's name (e.g. worst_group) or a definition .yaml")
        if name == "submit":
            a.add_argument("sweep_dir", metavar="SWEEP_DIR_OR_BUNDLE")
        if name == "rerun":
            a.add_argument("entry", metavar="ENTRY", help="the entry's file name in entries/<board>/ (with or without .json)")
            a.add_argument("--scratch", metavar="DIR", help="folder the run is trained into (default: a new temporary "
                                                            "folder, removed when the predictions match)")
            a.add_argument("--draw", type=int, default=0, metavar="N", help="seed of the draw of the entry's seed (default 0)")
            a.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                           help="cpu (default: predictions must be identical) or cuda (a stated tolerance)")
            a.add_argument("--threads", type=int, metavar="N", help="torch threads where the entry records none (default 1)")
            a.add_argument("--spec", action="append", metavar="SPEC", help="sweep spec the entry's runs came from "
                                                                        "(default: the board's `sweeps`); repeatable")
        if name == "export":
            a.add_argument("sweep_dir", metavar="SWEEP_DIR")
            a.add_argument("out", metavar="OUT", help="folder the bundles are written into, one folder per entrant")
        default = {"submit": "", "reproduce": " (default: <sweep folder>/board; the shipped one only if named)"}
        a.add_argument("--board-dir", required=name in ("submit", "page"), metavar="DIR",
                       help="board folder holding entries/<board>/ and <board>.md"
                            + default.get(name, " (default: the shipped one)"))
        if name == "render":
            a.add_argument("--html", action="store_true",
                           help="the board's self-contained HTML page instead (<board folder>/<board>.html): sortable and "
                                "filterable, its entries downloadable as CSV and JSON, no network")
        if name in ("verify", "pictures", "rerun"):
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
    if args.action == "page":
        print(f"wrote {write_page(args.board, Path(args.board_dir))}")
        return 0
    board = boards.load_board(args.board, args.board_dir)
    if args.action == "rerun":
        return rerun(board, args)
    if args.action == "submit":
        source = Path(args.sweep_dir)
        if source.is_file() or (source / "manifest.json").is_file():
            print(f"entry: {bundle.enter(board, source)}")
            print(f"table: {write_table(board)}")
            return 0
        return submit(board, args.sweep_dir, f"harness leaderboard submit {args.board} {args.sweep_dir}")
    if args.action == "export":
        for folder in bundle.export(board, args.sweep_dir, args.out):
            print(f"bundle: {folder}")
        return 0
    if args.action == "verify":
        entries = boards.load_entries(board)
        if not entries:
            raise HarnessError(f"board {board.name!r} has no entries in {shown(str(board.entries_dir))}")
        verify_entries(board, entries, args.runs, show=True)
        print(f"{len(entries)} entries verified: every number recomputed from stored predictions"
              + ("" if args.runs else f" ({sum(map(shipped.has_predictions, entries))} from the shipped ones)"))
        return 0
    if args.action == "pictures":
        paths = pictures(board, args.runs)
        if not paths:
            raise HarnessError(f"board {board.name!r} has no entries in {shown(str(board.entries_dir))}")
        for path in paths:
            print(f"picture: {path}")
        return 0
    if args.html:
        if args.board_dir is None:
            print(board_page(board), end="")
        else:
            print(f"wrote {write_board_page(board)}")
        return 0
    if args.board_dir is None:
        print(boards.render(board, boards.load_entries(board)), end="")
        return 0
    print(f"wrote {write_table(board)}")
    return 0


def checked_folders(args: argparse.Namespace) -> None:
    """Every folder option of the action, checked before anything is read or written."""
    labels = {"board_dir": "--board-dir", "runs": "--runs", "scratch": "--scratch", "out": "OUT",
              "sweep_dir": "SWEEP_DIR" if args.action in ("submit", "export") else "--sweep-dir"}
    for option, label in labels.items():
        value = getattr(args, option, None)
        if args.action == "submit" and option == "sweep_dir" and _a_file(value):
            continue  # a bundle archive (.zip, .tar), which bundle.enter checks
        if value is not None:
            files.folder_arg(value, label, must_exist=label == "SWEEP_DIR")


def _a_file(value: str | None) -> bool:
    try:
        return bool(value) and Path(value).is_file()
    except (OSError, ValueError):  # a name too long, a NUL: folder_arg names it
        return False


def verify_entries(board: boards.Board, entries: list[dict], runs: str | None = None, show: bool = False) -> None:
    """Recompute every entry from its runs' stored predictions (a line per entry with ``show``);
    a ``HarnessError`` listing every difference."""
    failures = []
    for entry in entries:
        if runs is None and shipped.has_predictions(entry):
            diffs = shipped.verify(board, entry)
        else:
            diffs = boards.verify(board, entry, runs)
            if diffs and diffs[-1].startswith("runs not found") and not shipped.has_predictions(entry):
                diffs[-1] = ("ships no predictions, so only its runs can check it, and " + diffs[-1]
                             + f"; or `harness leaderboard reproduce {board.name}`")
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
        raise HarnessError(f"no entrant of {shown(sweep_dir)} meets board {board.name!r}")
    if predictions.supported(board.scorer):
        shipped.publish_references(board, sweep_dir)
        for entry in entries:
            shipped.attach(board, entry, sweep_dir)
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
    # entries this reproduce may confirm: the board folder's own, else the shipped board's; only a
    # sweep that trained every run here (a fresh folder) can confirm them
    earlier = {Path(e["_path"]).name: e for e in boards.load_entries(board)
               or boards.load_entries(boards.load_board(args.board))}
    fresh = not collect.run_folders(folder)[0] if folder.exists() else True
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
    if fresh and ok and earlier:
        confirmed = mark_reruns(board, earlier)
        print(f"re-run: {len(confirmed)} of {len(earlier)} earlier entries trained again with the same numbers"
              + (f" ({', '.join(confirmed)})" if confirmed else ""))
    print(f"verified: every entry recomputed from its runs' stored predictions\n\n{board.table_path.read_text()}")
    print(f"wall time: {(time.perf_counter() - start) / 60:.1f} min")
    return 0 if ok else 1


def mark_reruns(board: boards.Board, earlier: dict[str, dict]) -> list[str]:
    """Stamp ``re-run`` on each new entry whose numbers, chosen runs and checkpoints equal an
    earlier entry's of the same entrant (runs trained again here gave the same predictions);
    the table is rewritten. The names of the entries so stamped."""
    confirmed = []
    for entry in boards.load_entries(board):
        path = Path(entry.pop("_path"))
        before = earlier.get(path.name)
        if before is not None and not boards._compare("results", before["results"], entry["results"]):
            entry["verification"] = levels.stamp("re-run")
            files.write_json(path, entry)
            confirmed.append(path.stem)
    if confirmed:
        write_table(board)
    return confirmed


def rerun(board: boards.Board, args: argparse.Namespace) -> int:
    """Train one drawn seed of the entry again and compare; with --board-dir, mark the entry
    re-run there (atomically) and rewrite the table; a difference refuses the mark (exit 2)."""
    import shutil
    import tempfile

    from harness.leaderboards import rerun as reruns

    if args.threads is not None and args.threads < 1:
        raise HarnessError(f"--threads must be an integer >= 1, got {args.threads}")
    name = args.entry[:-len(".json")] if args.entry.endswith(".json") else args.entry
    path = files.inside(board.entries_dir, f"{files.simple_name(name, 'ENTRY')}.json", what="ENTRY")
    entries = {Path(e["_path"]).name: e for e in boards.load_entries(board)}
    if path.name not in entries:
        raise HarnessError(f"board {board.name!r} has no entry {name!r} in {board.entries_dir}; entries: "
                           + ", ".join(Path(n).stem for n in sorted(entries)))
    entry = entries[path.name]
    verify_entries(board, [entry], args.runs)  # the stored predictions themselves first
    scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="harness-rerun-"))
    specs = [Path(s) for s in args.spec] if args.spec else None
    result = reruns.rerun(board, entry, scratch, args.draw, args.device, args.threads, specs, args.runs)
    print(result.summary())
    if result.differences:
        raise HarnessError(f"re-run of {path.name} does not reproduce its stored predictions ({len(result.differences)} "
                           f"difference(s); the run is in {scratch / result.drawn.run}); not marked:\n  "
                           + "\n  ".join(result.differences[:20]))
    if not args.scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.board_dir is None:
        print(f"reproduced: {path.name}'s predictions (not marked: pass --board-dir with its board folder to mark it "
              "re-run there)")
        return 0
    files.write_json(path, reruns.mark(entry, result))
    print(f"marked re-run: {path}\ntable: {write_table(board)}")
    return 0


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


def board_page(board: boards.Board) -> str:
    from harness.leaderboards.page import render_page

    return render_page([(board, boards.load_entries(board))], board.title)


def write_board_page(board: boards.Board) -> Path:
    """``<board folder>/<board>.html``: one board's self-contained page."""
    path = board.dir / f"{board.name}.html"
    files.write_text(path, board_page(board))
    return path


def write_page(names: list[str], board_dir: Path) -> Path:
    """``<board_dir>/boards.html``: the named boards, or every board with entries there (its
    definition ``<board_dir>/<name>.yaml`` if present, else the shipped one)."""
    from harness.leaderboards.page import render_page

    if not names:
        names = sorted(p.name for p in (board_dir / "entries").glob("*") if p.is_dir() and any(p.glob("*.json")))
        names = [str(board_dir / f"{n}.yaml") if (board_dir / f"{n}.yaml").is_file() else n for n in names]
    if not names:
        raise HarnessError(f"no board has entries in {shown(str(board_dir / 'entries'))}")
    sections = []
    for name in names:
        board = boards.load_board(name, board_dir)
        sections.append((board, boards.load_entries(board)))
    path = board_dir / "boards.html"
    files.write_text(path, render_page(sections))
    return path
