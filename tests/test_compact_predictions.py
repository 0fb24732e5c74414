"""Compact predictions of the transfer and disentanglement boards (Protocol.compact_form): an entry
made from a tiny sweep verifies from its shipped predictions alone once the runs are gone, a
tampered file is refused by its checksum, a selection that lands where no metric arrays were
shipped is refused, and export -> submit gives the same numbers."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import PROBE_TASKS

from harness.cli import main
from harness.core.files import load_arrays, save_arrays, sha256
from harness.leaderboards import board as boards
from harness.leaderboards import levels, shipped
from harness.protocols.base import Protocol, protocol

BOARDS = {  # board: (sweep fixture, changes to the shipped definition)
    "transfer": ("probe_sweep", {"datasets": PROBE_TASKS}),
    "transfer_best": ("probe_sweep", {"datasets": PROBE_TASKS}),
    "disentanglement": ("vae_sweep", {"required_seeds": 2}),
}


def definition(folder, name):
    """The shipped board ``name`` (as changed for the tiny sweeps) in its own board folder."""
    folder.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_load((boards.BOARD_DIR / f"{name}.yaml").read_text())
    (folder / f"{name}.yaml").write_text(yaml.safe_dump({**text, **BOARDS[name][1]}))
    return folder / f"{name}.yaml"


@pytest.fixture(scope="module", params=sorted(BOARDS))
def entered(request, tmp_path_factory):
    """(board name, board folder, the entries as made from the runs): submitted from a copy of
    the sweep, which is then deleted."""
    name = request.param
    sweep = request.getfixturevalue(BOARDS[name][0])
    root = tmp_path_factory.mktemp(name)
    runs = root / "runs"
    shutil.copytree(sweep, runs)
    board_yaml = definition(root / "board", name)
    assert main(["leaderboard", "submit", str(board_yaml), str(runs), "--board-dir", str(root / "board")]) == 0
    shutil.rmtree(runs)
    return name, root / "board"


def load(name, folder):
    board = boards.load_board(str(folder / f"{name}.yaml"), folder)
    return board, boards.load_entries(board)


def test_the_protocol_says_its_compact_form_and_the_default_is_none():
    assert Protocol.compact_form(protocol("transfer")) is None  # the base's documented default
    assert all(protocol(p).compact_form() is not None for p in ("worst_group", "transfer", "disentanglement"))
    assert protocol("pretraining").compact_form() is None


def test_an_entry_verifies_from_its_shipped_predictions_with_its_runs_gone(entered, capsys):
    name, folder = entered
    board, entries = load(name, folder)
    assert entries and all(shipped.has_predictions(e) for e in entries)
    for entry in entries:
        assert shipped.verify(board, entry) == []
    capsys.readouterr()
    assert main(["leaderboard", "verify", str(folder / f"{name}.yaml"), "--board-dir", str(folder)]) == 0
    assert f"({len(entries)} from the shipped ones)" in capsys.readouterr().out


def a_copy(entered, tmp_path):
    """(board name, a copy of the entered board folder to alter, the board, its first entry)."""
    name, folder = entered
    copy = tmp_path / "board"
    shutil.copytree(folder, copy)
    board, entries = load(name, copy)
    return name, copy, board, entries[0]


def test_a_tampered_number_is_caught(entered, tmp_path, capsys):
    name, copy, board, entry = a_copy(entered, tmp_path)
    metric = board.metrics[0]
    dataset = board.datasets[0]
    entry["results"][dataset]["metrics"][metric]["mean"] += 0.01
    assert any(f"{dataset}.metrics.{metric}.mean" in d for d in shipped.verify(board, entry))


def tamper(path, change):
    arrays = load_arrays(path)
    change(arrays)
    save_arrays(path, **arrays)


def test_a_tampered_npz_is_refused_by_its_checksum_and_then_by_its_numbers(entered, tmp_path, capsys):
    name, copy, board, entry = a_copy(entered, tmp_path)
    npz = copy / "entries" / name / entry["predictions"]["file"]
    run = entry["results"][board.datasets[0]]["runs"][0]
    key = next(k for k in load_arrays(npz) if k.startswith(f"{run['hash']}/") and k.endswith(
        (".mu", "test.probe")) and (f"/{board.datasets[0]}/" in k or name == "disentanglement"))

    def scramble(arrays):  # codes out of order; every test class predicted right (-1: the label)
        arrays[key] = arrays[key][::-1].copy() if key.endswith(".mu") else np.full_like(arrays[key], -1)
    tamper(npz, scramble)
    path = Path(entry["_path"])
    assert main(["leaderboard", "verify", str(copy / f"{name}.yaml"), "--board-dir", str(copy)]) == 2
    assert f"{npz.name} altered (sha256 differs" in capsys.readouterr().err
    entry = json.loads(path.read_text())
    entry["predictions"]["sha256"] = sha256(npz)
    path.write_text(json.dumps(entry))
    assert main(["leaderboard", "verify", str(copy / f"{name}.yaml"), "--board-dir", str(copy)]) == 2
    assert "entry says" in capsys.readouterr().err


@pytest.mark.parametrize("entered", ["transfer_best", "disentanglement"], indirect=True)
def test_a_selection_landing_where_no_metric_arrays_were_shipped_is_refused(entered, tmp_path):
    """Metric arrays ship only at the evaluations the entry's selection picked; predictions
    altered (checksum forged) so that the selection picks another one are refused, naming it."""
    name, copy, board, entry = a_copy(entered, tmp_path)
    npz = copy / "entries" / name / entry["predictions"]["file"]
    arrays = load_arrays(npz)
    dataset = board.datasets[0]
    picked = {(r["hash"], r["step"]) for r in entry["results"][dataset]["runs"]}
    if name == "disentanglement":  # another checkpoint of a chosen run gets the lowest validation loss
        run, step = min(picked)
        other = next(k for k in arrays if k.startswith(f"{run}/") and k.endswith("val.rec") and f"/{step}/" not in k)
        arrays[other] = np.zeros_like(arrays[other])
        arrays[other.replace("val.rec", "val.kl")] = np.zeros_like(arrays[other])
    else:  # (transfer_best: a per-layer entry has no other layer) another layer of a chosen run gets every validation class right (-1: the label)
        others = [k for k in arrays if k.endswith("val.probe_by_c") and f"/{dataset}/" in k
                  and (k.split("/")[0], int(k.split("/")[2].split("_")[0])) not in picked]
        assert others
        for key in others:
            arrays[key] = np.full_like(arrays[key], -1)
    save_arrays(npz, **arrays)
    entry["predictions"]["sha256"] = sha256(npz)
    diffs = shipped.verify(board, entry)
    assert any("whose predictions for the board's metrics are not shipped" in d for d in diffs), diffs


def test_export_then_submit_gives_the_same_numbers(entered, request, tmp_path):
    name, folder = entered
    sweep = request.getfixturevalue(BOARDS[name][0])
    board_yaml = definition(tmp_path / "via", name)
    shutil.copytree(folder / "references", tmp_path / "via" / "references")
    assert main(["leaderboard", "export", str(board_yaml), str(sweep), str(tmp_path / "bundles")]) == 0
    bundles = sorted((tmp_path / "bundles").iterdir())
    for path in bundles:
        assert main(["leaderboard", "submit", str(board_yaml), str(path), "--board-dir", str(tmp_path / "via")]) == 0
    _, direct = load(name, folder)
    _, via = load(name, tmp_path / "via")
    assert len(bundles) == len(direct) == len(via)
    for a, b in zip(direct, via):
        assert a["results"] == b["results"] and levels.level_of(b)[0] == "recomputed"
        # from its predictions alone; a bundle records no sweep spec, which verify says (whole_sweep)
        diffs = shipped.verify(boards.load_board(str(board_yaml), tmp_path / "via"), b)
        assert [d for d in diffs if not d.startswith("whole sweep: ")] == []
