"""``harness quickstart`` end to end, on few steps."""
import importlib.util
import shutil

from harness import quickstart
from harness.cli import main
from harness.leaderboards import board as boards


def test_quickstart_sweeps_enters_the_board_and_prints_it(tmp_path, capsys):
    board_dir = tmp_path / "boards"
    board_dir.mkdir()
    shutil.copy(boards.BOARD_DIR / "worst_group.yaml", board_dir)
    args = ["quickstart", "--dir", str(tmp_path / "qs"), "--board-dir", str(board_dir), "--steps", "20",
            "--hparam-draws", "1", "--launcher", "local"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "sweep: 6 trial(s) ran" in out  # ERM and GroupDRO, 1 draw, 3 seeds
    table = out[out.index("# Worst-group accuracy"):out.index("files:")]
    assert "| erm " in table and "| group_dro " in table and "0 1 2" in table
    assert f"harness collect {tmp_path / 'qs'}" in out and "wall time:" in out
    if importlib.util.find_spec("harness.discovery") is None:
        assert "discovery is not installed" in out and "xrm" not in table
    entries = sorted(p.name for p in (board_dir / "entries" / "worst_group").glob("*.json"))
    assert entries[:2] == ["erm--annotated.json", "group_dro--annotated.json"]
    assert main(["leaderboard", "verify", "--board-dir", str(board_dir)]) == 0
    # a relaunch reuses every trial
    assert main(args) == 0
    assert "sweep: 0 trial(s) ran, 6 already done" in capsys.readouterr().out


def test_quickstart_spec_adds_discovery_arms_only_when_given():
    plain = quickstart.spec(600, 4, "processes:2", [])
    assert plain["algorithms"] == ["erm", "group_dro"] and "discovery" not in plain
    with_xrm = quickstart.spec(600, 4, "processes:2", [("xrm", "group_dro")])
    assert with_xrm["algorithms"][-1] == {"name": "group_dro", "groups": ["inferred:xrm"]}
    assert with_xrm["discovery"]["algorithms"] == ["xrm"] and with_xrm["seeds"] == 3
