"""``harness leaderboard reproduce``: a board's own sweep specs run, entered, verified and
rendered in one command, on a tiny colored_digits board."""
import yaml
from conftest import tiny_spec
from harness.leaderboards import board as boards
from harness.leaderboards import levels

from harness.cli import main


def shipped_board() -> dict:
    return {p: p.read_bytes() for p in sorted(boards.BOARD_DIR.rglob("*")) if p.is_file() and p.suffix != ".pyc"}


def tiny_board(folder, **changes):
    """The smoke board as ``tiny``, 2 seeds, reproduced from a tiny spec (ERM and GroupDRO, 1 draw)."""
    (folder / "specs").mkdir(parents=True)
    spec = tiny_spec(name="tiny_board", hparam_draws=1)
    (folder / "specs" / "tiny.yaml").write_text(yaml.safe_dump(spec))
    definition = yaml.safe_load((boards.BOARD_DIR / "worst_group_smoke.yaml").read_text())
    definition.update({"name": "tiny", "required_seeds": 2, "sweeps": ["specs/tiny.yaml"], **changes})
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(definition))
    return path


def test_reproduce_runs_the_specs_then_enters_verifies_and_renders_outside_the_shipped_board(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    definition = tiny_board(tmp_path)
    before = shipped_board()
    args = ["leaderboard", "reproduce", str(definition), "--launcher", "local"]
    assert main(args) == 0
    assert shipped_board() == before
    out = capsys.readouterr().out
    assert "sweep: 4 trial(s) ran, 0 already done, 0 failed" in out and "verified:" in out
    assert "| group_dro   | annotated" in out and "wall time:" in out.splitlines()[-1]
    board_dir = tmp_path / "sweeps" / "tiny_board" / "board"  # default: <sweep folder of the first spec>/board
    entries = sorted(p.name for p in (board_dir / "entries" / "tiny").glob("*.json"))
    assert entries == ["erm--annotated.json", "group_dro--annotated.json"]
    entry = boards.load_entries(boards.load_board(str(definition), board_dir))[0]
    assert entry["provenance"]["produced_by"] == f"harness leaderboard reproduce {definition}"
    assert entry["provenance"]["sweep"] == "sweeps/tiny_board"
    assert main(["leaderboard", "verify", str(definition), "--board-dir", str(board_dir)]) == 0
    # a relaunch trains nothing again, into a board folder named explicitly
    assert main([*args, "--board-dir", str(tmp_path / "other")]) == 0
    assert "sweep: 0 trial(s) ran, 4 already done" in capsys.readouterr().out
    assert (tmp_path / "other" / "entries" / "tiny" / "erm--annotated.json").exists()


def test_reproduce_refuses_a_board_without_specs_or_with_a_missing_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for changes, message in (({"sweeps": []}, "names no sweep specs"),
                             ({"sweeps": ["specs/gone.yaml"]}, "sweep spec(s) not found"),
                             ({"sweeps": "specs/tiny.yaml"},
                              "must be a list of sweep spec paths, got 'specs/tiny.yaml'")):
        folder = tmp_path / str(len(message))
        definition = tiny_board(folder, **changes)
        assert main(["leaderboard", "reproduce", str(definition)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "sweeps").exists()


def test_reproduce_refuses_an_unknown_launcher_before_running_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    definition = tiny_board(tmp_path)
    assert main(["leaderboard", "reproduce", str(definition), "--launcher", "cluster"]) == 2
    assert "launcher" in capsys.readouterr().err
    assert not (tmp_path / "sweeps").exists()


def test_the_worst_group_board_names_its_sweep_spec_with_15_algorithms_or_more():
    from harness.sweeps.sweep import load_spec

    board = boards.load_board("worst_group")
    assert [p.name for p in board.sweeps] == ["worst_group_board.yaml"] and board.sweeps[0].is_file()
    spec = load_spec(board.sweeps[0])
    assert {d["name"] for d in spec.datasets} == set(board.datasets)
    assert len({arm.algorithm for arm in spec.arms}) >= 15 and spec.hparam_draws >= 2 and len(spec.seeds) >= 3
    for algorithm in ("group_dro", "dfr"):
        assert {a.point["groups"] for a in spec.arms if a.algorithm == algorithm} == {
            "annotated", "inferred:xrm", "inferred:jtt_errors"}


def test_a_fresh_reproduce_with_the_same_numbers_marks_the_entries_re_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    definition = tiny_board(tmp_path)
    board_dir = tmp_path / "board"
    args = ["leaderboard", "reproduce", str(definition), "--launcher", "local", "--board-dir", str(board_dir)]
    assert main([*args, "--sweep-dir", "first"]) == 0
    board = boards.load_board(str(definition), board_dir)
    assert {levels.level_of(e)[0] for e in boards.load_entries(board)} == {"recomputed"}
    capsys.readouterr()
    # resumed: nothing trained again, nothing confirmed
    assert main([*args, "--sweep-dir", "first"]) == 0
    assert "re-run:" not in capsys.readouterr().out
    assert main([*args, "--sweep-dir", "second"]) == 0  # trained again from scratch
    assert "re-run: 2 of 2 earlier entries trained again with the same numbers" in capsys.readouterr().out
    assert {levels.level_of(e)[0] for e in boards.load_entries(board)} == {"re-run"}
    assert "re-run" in (board_dir / "tiny.md").read_text()
