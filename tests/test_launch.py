"""sweeps/launch.py: the launch recipe and the words `harness sweep`, `harness quickstart` and
`harness leaderboard reproduce` share."""
from harness.sweeps.launch import SHOWN, details, summary
from harness.sweeps.sweep import Report


def test_the_summary_names_resumed_and_elsewhere_counts_only_when_there_are_some():
    assert summary(Report(ran=4)) == "4 trial(s) ran, 0 already done, 0 failed"
    report = Report(ran=3, skipped=2, resumed=1, elsewhere=2, failed={"abc": "boom"})
    assert summary(report) == ("3 trial(s) ran (1 resumed from checkpoints), 2 already done, 1 failed, "
                               "2 finished by another process")


def test_details_name_each_failure_by_its_last_error_line_and_the_trials_not_planned(tmp_path):
    (tmp_path / "h0").mkdir()
    (tmp_path / "h0" / "error.txt").write_text("Traceback\nValueError: bad")
    failed = {f"h{i}": "Traceback\nValueError: bad" for i in range(SHOWN + 2)} | {"empty": ""}
    lines = details(Report(failed=failed, waiting=["b waits", "a waits", "a waits"]), tmp_path)
    assert lines[0] == f"  failed h0: ValueError: bad  (see {tmp_path / 'h0' / 'error.txt'})"
    assert lines[1] == "  failed h1: ValueError: bad"
    assert lines[SHOWN:] == ["  ... and 3 more failed trial(s)", "  not planned: a waits", "  not planned: b waits"]
