"""The shipped boards: every rendered table is what its entries render, and an entry that carries
its compact predictions is verified from them alone, on a fresh clone, with no runs present."""
import json
import shutil

import numpy as np
import pytest

from harness.cli import main
from harness.core.files import load_arrays, save_arrays, sha256
from harness.leaderboards import board as boards
from harness.leaderboards import shipped

SHIPPED = sorted(p.stem for p in boards.BOARD_DIR.glob("*.yaml") if (boards.BOARD_DIR / "entries" / p.stem).is_dir())


def test_every_shipped_board_with_entries_is_listed():
    assert {"worst_group", "worst_group_smoke", "transfer", "transfer_best", "disentanglement"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_table_is_what_its_entries_render(name):
    """CI's check: an entry changed without `harness leaderboard render NAME --board-dir harness/leaderboards`."""
    board = boards.load_board(name)
    assert board.table_path.read_text() == boards.render(board, boards.load_entries(board))


# entries per shipped board (each ships its predictions), so that a board cannot lose entries unnoticed
ENTRIES = {"worst_group_smoke": 4, "worst_group": 30, "disentanglement": 2, "transfer": 125, "transfer_best": 21}


def test_every_shipped_board_ships_its_predictions():
    assert set(ENTRIES) == set(SHIPPED)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_a_shipped_board_verifies_from_its_shipped_predictions_alone(name):
    """A fresh clone has no runs: every number of every entry is recomputed from the predictions
    the entry ships (its checksum checked) and the board's published references."""
    board = boards.load_board(name)
    entries = boards.load_entries(board)
    assert len(entries) == ENTRIES[name] and all(shipped.has_predictions(e) for e in entries)
    assert {entry["selection"] for entry in entries} <= set(shipped.rules(board))
    for entry in entries:
        assert shipped.verify(board, entry) == [], boards.entry_path(board, entry).name


def test_the_verify_command_says_how_many_came_from_the_shipped_predictions(capsys):
    assert main(["leaderboard", "verify", "worst_group_smoke"]) == 0
    assert "4 entries verified: every number recomputed from stored predictions (4 from the shipped ones)" in (
        capsys.readouterr().out)


def test_shipped_predictions_fit_the_budget():
    paths = [*boards.BOARD_DIR.glob("entries/*/*.npz"), *boards.BOARD_DIR.glob("references/*/*")]
    assert paths and sum(p.stat().st_size for p in paths) <= 25 * 2 ** 20


@pytest.fixture
def smoke_copy(tmp_path):
    folder = tmp_path / "boards"
    shutil.copytree(boards.BOARD_DIR / "entries" / "worst_group_smoke", folder / "entries" / "worst_group_smoke")
    shutil.copytree(boards.BOARD_DIR / "references", folder / "references")
    return folder


def verify(folder):
    return main(["leaderboard", "verify", "worst_group_smoke", "--board-dir", str(folder)])


def test_a_tampered_number_or_prediction_is_caught_from_the_shipped_predictions(smoke_copy, capsys):
    entry_path = smoke_copy / "entries" / "worst_group_smoke" / "erm--annotated.json"
    entry = json.loads(entry_path.read_text())
    entry["results"]["colored_digits"]["metrics"]["test.avg_acc"]["mean"] += 0.01
    entry_path.write_text(json.dumps(entry))
    assert verify(smoke_copy) == 2
    assert "erm--annotated.json: colored_digits.metrics.test.avg_acc.mean: entry says" in capsys.readouterr().err
    entry["results"]["colored_digits"]["metrics"]["test.avg_acc"]["mean"] -= 0.01
    # the chosen checkpoint's test predictions flipped: the file's checksum tells, and with the
    # checksum forged too, the recomputed numbers do
    run = entry["results"]["colored_digits"]["runs"][0]
    npz = entry_path.with_suffix(".npz")
    arrays = load_arrays(npz)
    key = f"{run['hash']}/{run['step']}/test.pred"
    arrays[key] = (1 - arrays[key]).astype(arrays[key].dtype)
    save_arrays(npz, **arrays)
    entry_path.write_text(json.dumps(entry))
    assert verify(smoke_copy) == 2
    assert "erm--annotated.npz altered (sha256 differs" in capsys.readouterr().err
    entry["predictions"]["sha256"] = sha256(npz)
    entry_path.write_text(json.dumps(entry))
    assert verify(smoke_copy) == 2
    assert "colored_digits.metrics.test.worst_group_acc.mean" in capsys.readouterr().err


def test_a_damaged_reference_is_refused(smoke_copy, capsys):
    path = smoke_copy / "references" / "worst_group_smoke" / "colored_digits.npz"
    arrays = load_arrays(path)
    arrays["test.y"] = np.roll(arrays["test.y"], 1)
    save_arrays(path, **arrays)
    assert verify(smoke_copy) == 2
    assert "does not match the version" in capsys.readouterr().err


def test_an_entry_without_shipped_predictions_says_so_plainly(smoke_copy, capsys):
    """An entry made before entries carried their predictions verifies only from its runs."""
    path = smoke_copy / "entries" / "worst_group_smoke" / "erm--annotated.json"
    entry = json.loads(path.read_text())
    del entry["predictions"]
    path.write_text(json.dumps(entry))
    path.with_suffix(".npz").unlink()
    assert verify(smoke_copy) == 2
    err = capsys.readouterr().err
    assert "erm--annotated.json: ships no predictions, so only its runs can check it, and runs not found" in err
    assert "harness leaderboard reproduce worst_group_smoke" in err


@pytest.mark.parametrize("field, value, message", [
    ("board", "worst_group", "entry says 'worst_group'"), ("selection", "val-avg", "the board's rule is val-worst-class"),
])
def test_an_entry_claiming_another_board_or_rule_is_caught(smoke_copy, capsys, field, value, message):
    path = smoke_copy / "entries" / "worst_group_smoke" / "jtt--none--algorithm.hparams.id_steps-100.json"
    entry = json.loads(path.read_text())
    entry[field] = value
    path.write_text(json.dumps(entry))
    assert verify(smoke_copy) == 2
    assert message in capsys.readouterr().err


def test_a_metric_fitted_at_scoring_time_may_differ_in_the_last_digits_and_no_other():
    """DCI fits gradient boosting when it scores, so another CPU may recompute it slightly apart:
    the protocol's tolerance (1e-3) admits that; every other number must agree exactly. The
    factor probe, refitted likewise, is allowed 2e-3 (an AVX-512 machine read 5.6e-4)."""
    tolerances = boards.load_board("disentanglement").scorer.tolerances
    probe = {"metrics": {"shift.factor_acc": {"mean": 0.19896, "stderr": 0.00534}}}
    assert boards._compare("d", probe, {"metrics": {"shift.factor_acc": {"mean": 0.19952, "stderr": 0.00537}}},
                           tolerances) == []
    assert boards._compare("d", probe, {"metrics": {"shift.factor_acc": {"mean": 0.20196, "stderr": 0.00534}}},
                           tolerances) == [f"d.metrics.shift.factor_acc.mean: entry says 0.19896, recomputed {0.20196!r}"]
    claimed = {"metrics": {"test.dci_d": {"mean": 0.0146, "ci95": [0.0078, 0.0233]}, "test.mig": {"mean": 0.025}}}

    def recomputed(dci: float, mig: float) -> dict:
        return {"metrics": {"test.dci_d": {"mean": 0.0146 + dci, "ci95": [0.0078, 0.0233 + dci]},
                            "test.mig": {"mean": 0.025 + mig}}}
    assert boards._compare("d", claimed, recomputed(1e-4, 0), tolerances) == []
    assert boards._compare("d", claimed, recomputed(2e-3, 0), tolerances) == [
        f"d.metrics.test.dci_d.ci95[1]: entry says 0.0233, recomputed {0.0233 + 2e-3!r}",
        f"d.metrics.test.dci_d.mean: entry says 0.0146, recomputed {0.0146 + 2e-3!r}"]
    assert boards._compare("d", claimed, recomputed(0, 1e-6), tolerances) == [
        f"d.metrics.test.mig.mean: entry says 0.025, recomputed {0.025 + 1e-6!r}"]
    assert boards._compare("d", claimed, recomputed(1e-4, 0)) != []  # without the protocol's: exact
