"""Collection: the run × checkpoint frame, recomputed from predictions, and its tables."""
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.core.files import load_arrays, read_jsonl, save_arrays
from harness.protocols.base import protocol
from harness.reports import collect


def test_frame_has_every_run_and_checkpoint_and_agrees_with_the_logged_metrics(small_sweep):
    done, unfinished = collect.run_folders(small_sweep)
    assert len(done) == 8 and unfinished == []
    frame = collect.load_runs(done)
    assert len(frame) == 8 * 4  # 40 steps, evaluated every 10
    assert set(frame["algorithm"]) == {"erm", "group_dro"} and set(frame["hparams_seed"]) == {0, 1}
    for run in done:
        logged = {r["step"]: r["metrics"] for r in read_jsonl(run / "results.jsonl")}
        part = frame[frame["run"] == run.name]
        assert sorted(part["step"]) == sorted(logged)
        for _, row in part.iterrows():
            for split in ("val", "test"):
                for metric in ("avg_acc", "worst_group_acc", "worst_class_acc", "loss"):
                    assert row[f"{split}.{metric}"] == pytest.approx(logged[row["step"]][split][metric], abs=1e-12)


def test_numbers_come_from_the_predictions_not_the_log(small_sweep, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(small_sweep, folder)
    run = sorted(p for p in folder.iterdir() if (p / "done").exists())[0]
    path = sorted((run / "predictions").glob("*.npz"))[-1]
    arrays = load_arrays(path)
    arrays["test.probs"] = arrays["test.probs"][:, ::-1].copy()  # every test prediction flipped
    save_arrays(path, **arrays)
    frame = collect.load_runs([run])
    row = frame[frame["step"] == int(path.stem.split("_")[1])].iloc[0]
    logged = read_jsonl(run / "results.jsonl")[-1]["metrics"]["test"]["avg_acc"]
    assert row["test.avg_acc"] == pytest.approx(1 - logged)


def test_unfinished_runs_are_left_out(small_sweep, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(small_sweep, folder)
    (sorted(folder.glob("*/done"))[0]).unlink()
    done, unfinished = collect.run_folders(folder)
    assert (len(done), len(unfinished)) == (7, 1)


@pytest.mark.parametrize("fmt, marker", [("markdown", "| group_dro"), ("latex", r"$\pm$")])
def test_collect_command_prints_tables(small_sweep, capsys, fmt, marker):
    assert main(["collect", str(small_sweep), "--rule", "val-wga", "--rule", "oracle", "--format", fmt]) == 0
    out = capsys.readouterr()
    assert marker in out.out and "selection: val-wga" in out.out and "selection: oracle" in out.out
    assert "8 finished runs, 32 checkpoints" in out.err


def test_collect_csv_matches_a_summary_computed_by_hand(small_sweep, capsys, tmp_path):
    assert main(["collect", str(small_sweep), "--rule", "val-wga", "--format", "csv",
                 "--frame", str(tmp_path / "frame.csv")]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    frame = pd.read_csv(tmp_path / "frame.csv")
    assert len(frame) == 32
    row = table[table["algorithm"] == "group_dro"].iloc[0]
    part = frame[(frame["algorithm"] == "group_dro") & (frame["hparams_seed"] == row["hparams_seed"])]
    best = part.sort_values(["val.worst_group_acc", "step"], ascending=[False, True]).groupby("run").head(1)
    assert row["test.worst_group_acc"] == pytest.approx(best["test.worst_group_acc"].mean())
    assert row["n_seeds"] == 2


@pytest.mark.parametrize("args, message", [
    (["--rule", "best"], "unknown selection rule of protocol worst_group 'best'"),
    (["--metric", "test.accuracy"], "unknown metric of protocol worst_group 'test.accuracy'; accepted: train.avg_acc"),
])
def test_collect_bad_input_exits_2(small_sweep, capsys, args, message):
    assert main(["collect", str(small_sweep), *args]) == 2
    assert message in capsys.readouterr().err


def test_collect_of_an_empty_folder_exits_2(tmp_path, capsys):
    assert main(["collect", str(tmp_path)]) == 2
    assert "no finished run" in capsys.readouterr().err


def test_info_is_enough_to_recompute(small_sweep):
    run = sorted(p for p in small_sweep.iterdir() if (p / "done").exists())[0]
    info = json.loads((run / "info.json").read_text())
    arrays = load_arrays(sorted((run / "predictions").glob("*.npz"))[0])
    metrics = protocol(info["protocol"]).scores(arrays, info)
    y, pred = arrays["test.y"], arrays["test.probs"].argmax(1)
    groups = arrays["test.attr"]
    worst = min(np.mean(y[groups == g] == pred[groups == g]) for g in np.unique(groups))
    assert metrics["test"]["worst_group_acc"] == pytest.approx(worst)
