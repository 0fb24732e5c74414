"""collect and verify never silently change a table: runs they cannot trust are named and left
out, and an entry's provenance is checked against what its runs recorded."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml
from harness.leaderboards import board as boards

from harness.cli import main
from harness.core import files
from harness.core.errors import HarnessError
from harness.core.version import code_version
from harness.reports import collect


@pytest.fixture
def sweep_copy(small_sweep, tmp_path):
    folder = tmp_path / "sweep"
    shutil.copytree(small_sweep, folder)
    return folder


def first_run(folder):
    return sorted(p for p in folder.iterdir() if (p / "done").exists())[0]


def collect_err(folder, capsys):
    capsys.readouterr()
    assert main(["collect", str(folder)]) == 0
    return capsys.readouterr().err


def test_a_run_without_info_json_is_reported_as_left_out(sweep_copy, capsys):
    run = first_run(sweep_copy)
    (run / "info.json").unlink()
    err = collect_err(sweep_copy, capsys)
    assert f"run {run.name} left out: info.json is missing" in err
    assert "7 finished runs" in err and "1 finished run(s) left out (named above)" in err


@pytest.mark.parametrize("damage, named", [
    (lambda p: p.unlink(), "missing predictions/"),
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "altered (sha256 differs) predictions/"),
])
def test_a_missing_or_altered_predictions_file_is_named_and_its_run_left_out(sweep_copy, capsys, damage, named):
    run = first_run(sweep_copy)
    path = sorted((run / "predictions").glob("*.npz"))[0]
    damage(path)
    assert f"run {run.name} left out: {named}{path.name}" in collect_err(sweep_copy, capsys)


def test_a_predictions_file_added_behind_the_manifest_is_named(sweep_copy, capsys):
    run = first_run(sweep_copy)
    shutil.copy(sorted((run / "predictions").glob("*.npz"))[0], run / "predictions" / "step_0999999.npz")
    assert f"run {run.name} left out: not in its manifest predictions/step_0999999.npz" in collect_err(sweep_copy, capsys)


def test_an_unreadable_predictions_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "step_0000010.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(HarnessError, match=r"step_0000010.npz is not a readable array file"):
        files.load_arrays(tmp_path / "step_0000010.npz")


def test_a_trial_folder_not_named_by_its_config_hash_is_left_out(sweep_copy, capsys):
    run = first_run(sweep_copy)
    run.rename(sweep_copy / "0123456789ab")
    assert (f"run 0123456789ab left out: a trial folder is named by its config's hash, this one holds config "
            f"{run.name}") in collect_err(sweep_copy, capsys)


def test_a_config_changed_after_the_run_is_left_out(sweep_copy, capsys):
    run = first_run(sweep_copy)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["seed"] = 7
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert f"run {run.name} left out: its config.yaml hashes to" in collect_err(sweep_copy, capsys)


def test_runs_record_the_code_version_they_were_trained_with(small_sweep):
    run = first_run(small_sweep)
    assert json.loads((run / "info.json").read_text())["code_version"] == code_version()
    assert collect.runs_code_version(p for p in small_sweep.iterdir() if (p / "done").exists()) == code_version()


@pytest.fixture
def entry(small_sweep, tmp_path):
    definition = yaml.safe_load((boards.BOARD_DIR / "worst_group_smoke.yaml").read_text())
    definition["required_seeds"] = 2
    (tmp_path / "boards").mkdir()
    (tmp_path / "boards" / "worst_group.yaml").write_text(yaml.safe_dump(definition))
    board = boards.load_board(str(tmp_path / "boards" / "worst_group.yaml"), tmp_path / "boards")
    entries, skipped = boards.build_entries(board, small_sweep, "test")
    assert skipped == []
    return board, entries[0]


@pytest.mark.parametrize("key, claim", [
    ("seeds", [0, 1, 2, 3, 4]),
    ("code_version", {"package": "shift-harness 9.9", "git_commit": "deadbeef00", "git_dirty": False}),
    ("config_hashes", []),
])
def test_verify_checks_provenance_against_the_runs(entry, key, claim):
    board, claimed = entry
    assert boards.verify(board, claimed) == []
    forged = json.loads(json.dumps(claimed))
    forged["provenance"][key] = claim
    diffs = boards.verify(board, forged)
    assert diffs and all(d.startswith(f"provenance.{key}") for d in diffs)


def test_a_truncated_checkpoint_restarts_the_run_to_the_same_numbers(tiny_cfg, tmp_path):
    from harness.core import config
    from harness.runs.run import CheckpointWarning, train
    cfg = tiny_cfg()
    reference = train(dict(cfg, run_dir=str(tmp_path / "reference")))
    out = config.run_dir(cfg)
    train(cfg)
    (out / "done").unlink()
    checkpoint = out / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # a copy cut short
    with pytest.warns(CheckpointWarning, match="unreadable checkpoint .* the run restarts from step 0"):
        train(cfg)
    assert (out / "done").exists() and collect.vet([out], named_by_hash=True) == ([out], [])
    rows = [{k: v for k, v in r.items() if k != "train_seconds"} for r in files.read_jsonl(out / "results.jsonl")]
    ref = [{k: v for k, v in r.items() if k != "train_seconds"} for r in files.read_jsonl(reference / "results.jsonl")]
    assert rows == ref


def test_a_torn_last_results_row_is_repaired_on_resume(tiny_cfg):
    from harness.core import config
    from harness.runs.run import train
    cfg = tiny_cfg()
    out = config.run_dir(cfg)
    train(cfg)
    (out / "done").unlink()
    with open(out / "results.jsonl", "a") as fh:
        fh.write('{"step": 80, "metr')
    with pytest.warns(files.TornLineWarning):
        train(cfg)
    assert [r["step"] for r in files.read_jsonl(out / "results.jsonl")] == [20, 40, 60]
