"""``harness quickstart`` end to end, on few steps."""
from harness.leaderboards import board as boards

from harness import quickstart
from harness.cli import main


def shipped_board() -> dict:
    return {p: p.read_bytes() for p in sorted(boards.BOARD_DIR.rglob("*")) if p.is_file() and p.suffix != ".pyc"}


def test_quickstart_sweeps_enters_its_own_board_and_prints_it(tmp_path, capsys):
    board_dir = tmp_path / "qs" / "board"
    args = ["quickstart", "--dir", str(tmp_path / "qs"), "--steps", "20", "--hparam-draws", "1", "--launcher", "local"]
    before = shipped_board()
    assert main(args) == 0
    assert shipped_board() == before  # the shipped board is never rewritten by the demo
    out = capsys.readouterr().out
    # 4 arms x 1 draw x 3 seeds, and XRM's 2 discovery draws x 3 seeds
    assert "sweep: 18 trial(s) ran" in out
    table = out[out.index("# Worst-group accuracy"):out.index("files:")]
    for row in ("| erm ", "| group_dro   | annotated", "| group_dro   | inferred:xrm", "| jtt "):
        assert row in table
    assert f"harness collect {tmp_path / 'qs'}" in out and "wall time:" in out
    entries = sorted(p.name for p in (board_dir / "entries" / "worst_group_smoke").glob("*.json"))
    assert entries == ["erm--annotated.json", "group_dro--annotated.json", "group_dro--inferred-xrm.json",
                       "jtt--none--algorithm.hparams.id_steps-3.json"]  # its arm: its own override
    assert main(["leaderboard", "verify", "worst_group_smoke", "--board-dir", str(board_dir)]) == 0
    # a relaunch reuses every trial
    assert main(args) == 0
    assert "sweep: 0 trial(s) ran, 18 already done" in capsys.readouterr().out


def test_quickstart_spec_has_annotated_and_annotation_free_arms():
    spec = quickstart.spec(600, 4, "processes:2")
    assert spec["algorithms"][:2] == ["erm", "group_dro"]
    assert spec["algorithms"][2] == {"name": "jtt", "groups": ["none"],
                                     "overrides": {"algorithm.hparams.id_steps": 100}}
    assert spec["algorithms"][3] == {"name": "group_dro", "groups": ["inferred:xrm"]}
    assert spec["discovery"]["algorithms"] == ["xrm"] and spec["seeds"] == 3
