"""The worst-group leaderboard: entries from a sweep, verified against predictions, rendered."""
import json
import shutil

import pytest
import yaml
from harness.leaderboards import board as boards

from harness.cli import main
from harness.core.files import load_arrays, save_arrays, sha256


def submit(sweep_dir, board_dir):
    return main(["leaderboard", "submit", str(board_dir / "worst_group.yaml"), str(sweep_dir),
                 "--board-dir", str(board_dir)])


def test_submit_writes_one_entry_per_algorithm_and_group_source_with_provenance(small_sweep, board_dir, capsys):
    assert submit(small_sweep, board_dir) == 0
    paths = sorted((board_dir / "entries" / "worst_group").glob("*.json"))
    assert [p.name for p in paths] == ["erm--annotated.json", "group_dro--annotated.json"]
    entry = json.loads(paths[1].read_text())
    result = entry["results"]["colored_digits"]
    assert entry["selection"] == "val-wga" and result["seeds"] == [0, 1]
    assert len(result["candidates"]) == 4 and {r["hash"] for r in result["runs"]} <= set(result["candidates"])
    assert entry["provenance"]["config_hashes"] == result["candidates"]
    assert entry["provenance"]["code_version"]["package"].startswith("shift-harness ")
    assert set(result["metrics"]) == {"test.worst_group_acc", "test.avg_acc", "test.worst_class_acc"}
    table = (board_dir / "worst_group.md").read_text()
    assert table.index("| group_dro") < table.index("| erm")  # ranked by worst-group accuracy
    assert main(["leaderboard", "verify", str(board_dir / "worst_group.yaml"), "--board-dir", str(board_dir)]) == 0
    assert "2 entries verified" in capsys.readouterr().out


def test_verify_exits_2_naming_a_tampered_number(small_sweep, board_dir, capsys):
    submit(small_sweep, board_dir)
    path = board_dir / "entries" / "worst_group" / "group_dro--annotated.json"
    entry = json.loads(path.read_text())
    entry["results"]["colored_digits"]["metrics"]["test.worst_group_acc"]["mean"] += 0.01
    path.write_text(json.dumps(entry))
    capsys.readouterr()
    assert main(["leaderboard", "verify", str(board_dir / "worst_group.yaml"), "--board-dir", str(board_dir)]) == 2
    err = capsys.readouterr().err
    assert "colored_digits.metrics.test.worst_group_acc.mean: entry says" in err and "erm" not in err


def test_verify_recomputes_from_predictions(small_sweep, board_dir, tmp_path, capsys):
    submit(small_sweep, board_dir)
    copy = tmp_path / "runs"
    shutil.copytree(small_sweep, copy)
    entry = json.loads((board_dir / "entries" / "worst_group" / "erm--annotated.json").read_text())
    chosen = entry["results"]["colored_digits"]["runs"][0]
    path = copy / chosen["hash"] / "predictions" / f"step_{chosen['step']:07d}.npz"
    arrays = load_arrays(path)
    arrays["test.probs"] = arrays["test.probs"][:, ::-1].copy()
    save_arrays(path, **arrays)
    capsys.readouterr()
    verify = ["leaderboard", "verify", str(board_dir / "worst_group.yaml"), "--board-dir", str(board_dir), "--runs", str(copy)]
    assert main(verify) == 2
    assert (f"run {chosen['hash']} left out: altered (sha256 differs) predictions/{path.name}"
            in capsys.readouterr().err)
    # with its manifest forged too, the numbers recomputed from the predictions still tell
    forged = json.loads((path.parent.parent / "manifest.json").read_text())
    (path.parent.parent / "manifest.json").write_text(json.dumps({**forged, path.name: sha256(path)}))
    assert main(verify) == 2
    assert "erm--annotated.json: colored_digits.metrics.test.avg_acc.mean" in capsys.readouterr().err


def test_verify_without_the_runs_says_where_to_find_them(small_sweep, board_dir, tmp_path, capsys):
    submit(small_sweep, board_dir)
    assert main(["leaderboard", "verify", str(board_dir / "worst_group.yaml"), "--board-dir", str(board_dir), "--runs", str(tmp_path / "none")]) == 2
    assert "runs not found (finished) in" in capsys.readouterr().err


def test_a_board_needs_its_seeds(small_sweep, tmp_path, capsys):
    folder = tmp_path / "boards"
    folder.mkdir()
    shutil.copy(boards.BOARD_DIR / "worst_group_smoke.yaml", folder / "worst_group.yaml")  # 3 seeds; the sweep has 2
    assert submit(small_sweep, folder) == 2
    captured = capsys.readouterr()
    assert "1 seed(s) answer" not in captured.out and "2 seed(s) answer rule val-wga, the board requires 3" in captured.out
    assert not (folder / "entries").exists()


def test_unknown_board_names_the_boards_there(capsys):
    assert main(["leaderboard", "render", "best"]) == 2
    assert "unknown board" in capsys.readouterr().err


def test_render_is_rebuilt_from_entries(small_sweep, board_dir):
    submit(small_sweep, board_dir)
    (board_dir / "worst_group.md").unlink()
    assert main(["leaderboard", "render", str(board_dir / "worst_group.yaml"), "--board-dir", str(board_dir)]) == 0
    table = (board_dir / "worst_group.md").read_text()
    assert "rank | algorithm" in table and "|      1 | group_dro" in table



def test_shipped_entries_cover_the_board_recipe():
    """The committed entries come from the board sweep's runs (`harness leaderboard reproduce
    worst_group`); tests/test_shipped_boards.py verifies their numbers from the predictions they
    ship."""
    board = boards.load_board("worst_group")
    entries = boards.load_entries(board)
    assert board.datasets == ["colored_fashion_mnist", "background_fashion_mnist"]
    assert len({e["entrant"]["algorithm"] for e in entries}) >= 15
    assert {(e["entrant"]["algorithm"], e["entrant"]["groups"]) for e in entries} >= {
        ("erm", "none"), ("group_dro", "annotated"), ("group_dro", "inferred:xrm"), ("group_dro", "inferred:jtt_errors"),
        ("dfr", "annotated"), ("dfr", "inferred:xrm"), ("dfr", "inferred:jtt_errors")}
    for entry in entries:
        assert entry["protocol"] == "worst_group" and set(entry["entrant"]) == {"algorithm", "groups", "arm"}
        assert entry["provenance"]["seeds"] == [0, 1, 2]


@pytest.fixture(scope="module")
def two_arm_sweep(tmp_path_factory):
    """GroupDRO twice, differing only in its step size eta: 1 draw, 2 seeds each."""
    from conftest import tiny_spec

    from harness.sweeps import sweep
    from harness.sweeps.launchers import Local

    spec = tiny_spec(algorithms=[{"name": "group_dro", "overrides": {"algorithm.hparams.eta": 0.001}},
                                 {"name": "group_dro", "overrides": {"algorithm.hparams.eta": 0.1}}],
                     hparam_draws=1)
    folder = tmp_path_factory.mktemp("arms") / "tiny"
    assert sweep.run_sweep(sweep.parse_spec(spec), folder, Local()).ran == 4
    return folder


def test_two_arms_of_one_algorithm_are_two_entrants_not_extra_seeds(two_arm_sweep, board_dir):
    assert submit(two_arm_sweep, board_dir) == 0
    entries = [json.loads(p.read_text()) for p in sorted((board_dir / "entries" / "worst_group").glob("*.json"))]
    assert sorted(e["entrant"]["arm"] for e in entries) == ["algorithm.hparams.eta=0.001", "algorithm.hparams.eta=0.1"]
    for entry in entries:
        result = entry["results"]["colored_digits"]
        assert result["seeds"] == [0, 1] and len(result["runs"]) == 2 and len(result["candidates"]) == 2
    assert entries[0]["results"] != entries[1]["results"]


def test_required_seeds_counts_distinct_seeds_not_rows(two_arm_sweep, board_dir, capsys):
    # A board that does not tell the arms apart sees 4 chosen rows but only 2 distinct seeds:
    # it must refuse a requirement of 3 seeds rather than count the second arm as more seeds.
    definition = yaml.safe_load((board_dir / "worst_group.yaml").read_text())
    definition.update(entrant=["algorithm", "groups"], required_seeds=3)
    (board_dir / "worst_group.yaml").write_text(yaml.safe_dump(definition))
    assert submit(two_arm_sweep, board_dir) == 2
    assert "2 seed(s) answer rule val-wga, the board requires 3" in capsys.readouterr().out


@pytest.mark.parametrize("path, value, message", [
    (("results", "colored_digits", "runs"), "x", "results.colored_digits.runs must be a list, got 'x'"),
    (("results", "colored_digits", "runs", 0, "seed"), "0", "results.colored_digits.runs[0].seed must be an integer"),
    (("provenance", "seeds"), None, "provenance.seeds must be a list, got None"),
    (("entrant",), ["erm"], "entrant must be a mapping, got ['erm']"),
    (("results", "colored_digits", "metrics", "test.avg_acc", "mean"), True, "mean must be an integer or a number"),
])
def test_a_malformed_entry_field_is_one_line_naming_it(small_sweep, board_dir, capsys, path, value, message):
    submit(small_sweep, board_dir)
    target = board_dir / "entries" / "worst_group" / "erm--annotated.json"
    entry = json.loads(target.read_text())
    node = entry
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    target.write_text(json.dumps(entry))
    capsys.readouterr()
    assert main(["leaderboard", "verify", str(board_dir / "worst_group.yaml"), "--board-dir", str(board_dir)]) == 2
    err = capsys.readouterr().err
    assert message in err and "erm--annotated.json" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("algorithm", ["../../../X", "/etc/passwd", "..", "a/../../b", "x" * 300])
def test_an_entry_file_stays_in_its_board_folder_whatever_the_entrant_says(board_dir, algorithm):
    """Entrant values come from runs' config.yaml files (untrusted): they never steer the path."""
    board = boards.load_board(str(board_dir / "worst_group.yaml"), board_dir)
    path = boards.entry_path(board, {"entrant": {"algorithm": algorithm, "groups": "annotated", "arm": ""}})
    assert path.parent == board.entries_dir and path.name.endswith(".json") and "/" not in path.name
    assert not path.name.startswith(".") and len(path.name) < 80


@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, "unknown key of board {path} 'colour'; accepted: name, title, protocol, entrant"),
    ({"protocol": None}, "protocol of board {path} must be a non-empty string, got None"),
    ({"required_seeds": 0}, "required_seeds of board {path} must be an integer >= 1, got 0"),
    ({"required_seeds": True}, "required_seeds of board {path} must be an integer >= 1, got True"),
    ({"entrant": []}, "entrant of board {path} must be a non-empty list of names, got []"),
    ({"metrics": ["test.avg_acc", 3]}, "each item of metrics of board {path} must be a name, got 3"),
    ({"selection": 3}, "selection of board {path} must be a rule or a mapping of entrant kinds to rules, got 3"),
    ({"selection": {"annotated": "val-best"}},
     "unknown selection rule of protocol worst_group 'val-best'; accepted: oracle"),
    ({"selection": {"sometimes": "val-wga"}}, "unknown kind of entrant in board {path} (protocol worst_group) "
                                              "'sometimes'; accepted: annotated"),
    ({"sweeps": [""]}, "each item of sweeps of board {path} must be a sweep spec path, got ''"),
    ({"name": "a b"}, "name of board {path} must be letters, digits and underscores, got 'a b'"),
])
def test_a_bad_board_definition_names_the_key_and_what_it_accepts(board_dir, change, message):
    path = board_dir / "worst_group.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **change}))
    with pytest.raises(boards.HarnessError) as raised:
        boards.load_board(str(path), board_dir)
    assert message.format(path=path) in str(raised.value) and "\n" not in str(raised.value)


def test_a_board_definition_without_a_required_key_says_what_it_needs(board_dir):
    path = board_dir / "worst_group.yaml"
    definition = yaml.safe_load(path.read_text())
    del definition["required_seeds"]
    path.write_text(yaml.safe_dump(definition))
    with pytest.raises(boards.HarnessError, match="required_seeds of board .* is required: distinct seeds an entry"):
        boards.load_board(str(path), board_dir)
    board = boards.load_board("worst_group_wilds")  # the optional keys filled: description given, a sweep
    assert (board.name, board.required_seeds, [p.name for p in board.sweeps]) == (
        "worst_group_wilds", 3, ["worst_group_board_wilds.yaml"])
