"""``harness leaderboard rerun``: one drawn seed of a shipped smoke entry trained again here gives
its shipped predictions; a tampered stored prediction is caught and the entry is not marked."""
import json
import shutil

import numpy as np
import pytest
import yaml

from harness import quickstart
from harness.cli import main
from harness.core.files import load_arrays, save_arrays, sha256
from harness.leaderboards import board as boards
from harness.leaderboards import rerun

ENTRY = "erm--annotated"


def test_the_smoke_boards_spec_is_the_quickstarts():
    board = boards.load_board("worst_group_smoke")
    [spec] = board.sweeps
    assert yaml.safe_load(spec.read_text()) == quickstart.spec(600, 3, "processes:2")


@pytest.fixture
def smoke(tmp_path):
    """A copy of the smoke board whose entries name a sweep folder that is not here (a fresh clone)."""
    folder = tmp_path / "board"
    shutil.copytree(boards.BOARD_DIR / "entries" / "worst_group_smoke", folder / "entries" / "worst_group_smoke")
    shutil.copytree(boards.BOARD_DIR / "references", folder / "references")
    for path in (folder / "entries" / "worst_group_smoke").glob("*.json"):
        entry = json.loads(path.read_text())
        entry["provenance"]["sweep"] = str(tmp_path / "gone")
        path.write_text(json.dumps(entry, indent=2, sort_keys=True))
    return folder


def run_rerun(folder, scratch):
    return main(["leaderboard", "rerun", "worst_group_smoke", ENTRY, "--board-dir", str(folder),
                 "--scratch", str(scratch)])


def test_a_rerun_reproduces_the_shipped_predictions_and_marks_the_entry(smoke, tmp_path, capsys):
    assert run_rerun(smoke, tmp_path / "scratch") == 0
    out = capsys.readouterr().out
    assert "drew seed 1 on colored_digits (run 0a66d535ca44, chosen step 250) of 3 chosen run(s) by random.Random(0)" in out
    assert "trained on cpu with 1 thread(s) (the entry records no thread count; the default)" in out
    assert "24 stored prediction array(s) compared, identical required" in out
    entry = json.loads((smoke / "entries" / "worst_group_smoke" / f"{ENTRY}.json").read_text())
    assert entry["verification"]["level"] == "re-run"
    assert entry["verification"]["rerun"] == {"dataset": "colored_digits", "seed": 1, "run": "0a66d535ca44",
                                              "device": "cpu", "threads": 1, "compared": 24}
    row = next(line for line in (smoke / "worst_group_smoke.md").read_text().splitlines() if "| erm " in line)
    assert f"re-run {entry['verification']['date']}" in row
    assert (tmp_path / "scratch" / "0a66d535ca44" / "done").is_file()  # trained in the scratch folder only
    assert not list(smoke.glob("*/0a66d535ca44"))
    assert main(["leaderboard", "verify", "worst_group_smoke", "--board-dir", str(smoke)]) == 0


def test_a_tampered_stored_prediction_is_caught_and_the_entry_not_marked(smoke, tmp_path, capsys):
    path = smoke / "entries" / "worst_group_smoke" / f"{ENTRY}.json"
    npz = path.with_suffix(".npz")
    arrays = load_arrays(npz)
    key = "0a66d535ca44/50/test.pred"  # the drawn run, a checkpoint selection does not read the test split of
    arrays[key] = arrays[key].copy()
    arrays[key][0] = 1 - arrays[key][0]
    save_arrays(npz, **arrays)
    entry = json.loads(path.read_text())
    entry["predictions"]["sha256"] = sha256(npz)  # the checksum forged too: verify alone cannot tell
    path.write_text(json.dumps(entry, indent=2, sort_keys=True))
    before = path.read_bytes()
    assert main(["leaderboard", "verify", "worst_group_smoke", "--board-dir", str(smoke)]) == 0
    capsys.readouterr()
    assert run_rerun(smoke, tmp_path / "scratch") == 2
    err = capsys.readouterr().err
    assert "does not reproduce its stored predictions (1 difference(s)" in err and "not marked" in err
    assert "0a66d535ca44/50/test.pred: 1 of 599 value(s) differ" in err
    assert path.read_bytes() == before and not (smoke / "worst_group_smoke.md").exists()


def test_rerun_refuses_what_it_cannot_check(smoke, tmp_path, capsys):
    assert main(["leaderboard", "rerun", "worst_group_smoke", "nobody", "--board-dir", str(smoke)]) == 2
    err = capsys.readouterr().err
    assert "has no entry 'nobody'" in err and "erm--annotated" in err
    path = smoke / "entries" / "worst_group_smoke" / f"{ENTRY}.json"
    entry = json.loads(path.read_text())
    entry["verification"] = {"level": "claimed", "date": "2026-12-01"}
    path.write_text(json.dumps(entry))
    assert run_rerun(smoke, tmp_path / "s") == 2
    assert "is claimed (predictions of code that is not ours)" in capsys.readouterr().err
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_on_a_gpu_predicted_classes_may_differ_within_the_stated_tolerance():
    stored = {"r/50/test.pred": np.zeros(1000, dtype=np.int8), "r/test.pos": np.arange(1000)}
    few = dict(stored, **{"r/50/test.pred": np.r_[np.ones(10), np.zeros(990)].astype(np.int8)})
    many = dict(stored, **{"r/50/test.pred": np.r_[np.ones(11), np.zeros(989)].astype(np.int8)})
    is_class = lambda key: key.endswith(".pred")  # noqa: E731
    assert rerun._compare(stored, few, True, is_class) == (2, [])
    assert "1.1% of predicted classes differ (tolerance 1%)" in rerun._compare(stored, many, True, is_class)[1][0]
    assert "10 of 1000 value(s) differ" in rerun._compare(stored, few, False, is_class)[1][0]  # CPU: identical
    floats = {"mu": np.ones(4)}
    assert rerun._compare(floats, {"mu": np.ones(4) + 5e-4}, True, is_class) == (1, [])
    assert rerun._compare(floats, {"mu": np.ones(4) + 5e-4}, False, is_class)[1]


def test_an_entry_without_compact_predictions_is_compared_with_its_run_folder(small_sweep, tmp_path, capsys):
    """The entry's runs are here (its sweep folder): the re-run's arrays are compared with the stored
    run's, array by array, at the thread count the run recorded."""
    from conftest import tiny_spec

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))
    definition = yaml.safe_load((boards.BOARD_DIR / "worst_group_smoke.yaml").read_text())
    definition.update(name="tiny_board", required_seeds=2, sweeps=[str(spec)])
    folder = tmp_path / "boards"
    folder.mkdir()
    (folder / "tiny_board.yaml").write_text(yaml.safe_dump(definition))
    board_yaml = str(folder / "tiny_board.yaml")
    assert main(["leaderboard", "submit", board_yaml, str(small_sweep), "--board-dir", str(folder)]) == 0
    path = folder / "entries" / "tiny_board" / "erm--annotated.json"
    entry = json.loads(path.read_text())
    del entry["predictions"]  # an entry from before compact predictions: only its runs can check it
    path.write_text(json.dumps(entry))
    capsys.readouterr()
    assert main(["leaderboard", "rerun", board_yaml, "erm--annotated", "--board-dir", str(folder),
                 "--scratch", str(tmp_path / "scratch"), "--draw", "3"]) == 0
    out = capsys.readouterr().out
    assert "by random.Random(3)" in out and "(the count the run recorded)" in out and "marked re-run" in out
    run = json.loads(path.read_text())["verification"]["rerun"]["run"]
    recorded = json.loads((small_sweep / run / "info.json").read_text())
    assert f"with {recorded['threads']} thread(s)" in out and recorded["device"] == "cpu"
    stored = sorted(p.name for p in (small_sweep / run / "predictions").iterdir())
    assert sorted(p.name for p in (tmp_path / "scratch" / run / "predictions").iterdir()) == stored
