"""A protocol registered from outside the package, through the entry-point group, runs end to
end: sweep -> collect -> its own board (submit, verify, render), with no edit to the engine."""
import json
import sys

import numpy as np
import pytest
import yaml
from conftest import install_entry_point

from harness.cli import main
from harness.core import registry
from harness.core.files import load_arrays
from harness.core.registry import ALGORITHMS, PROTOCOLS


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """tests/reconstruction_plugin.py installed as a third-party plugin (a dist-info folder with
    a ``shift_harness`` entry point), loaded by the registries like any other."""
    install_entry_point(tmp_path, "reconstruction", "reconstruction_plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded", False)
    assert "reconstruction_plugin" not in sys.modules  # only the entry point imports it
    yield
    PROTOCOLS._entries.pop("reconstruction", None)
    ALGORITHMS._entries.pop("autoencoder", None)
    sys.modules.pop("reconstruction_plugin", None)


def test_a_plugin_protocol_runs_from_sweep_to_its_own_board(plugin, tmp_path, capsys):
    spec = {"name": "ae", "datasets": ["colored_digits"], "groups": ["none"], "seeds": 2, "launcher": "local",
            "algorithms": [{"name": "autoencoder", "overrides": {"backbone.options.width": 8}},
                           {"name": "autoencoder", "overrides": {"backbone.options.width": 64}}],
            "overrides": {"steps": 30, "eval_every": 10}}
    (tmp_path / "ae.yaml").write_text(yaml.safe_dump(spec))
    sweep_dir = tmp_path / "sweeps" / "ae"
    assert main(["sweep", str(tmp_path / "ae.yaml"), "--dir", str(sweep_dir)]) == 0
    runs = sorted(p for p in sweep_dir.iterdir() if (p / "done").exists())
    assert len(runs) == 4 and {json.loads((r / "info.json").read_text())["protocol"] for r in runs} == {
        "reconstruction"}

    capsys.readouterr()
    assert main(["collect", str(sweep_dir), "--rule", "val-mse"]) == 0
    table = capsys.readouterr().out
    assert "selection: val-mse" in table and "test reconstruction MSE (raw)" in table
    rows = [line for line in table.splitlines() if line.startswith("| autoencoder")]
    assert len(rows) == 2 and "backbone.options.width=8" in table and "%" not in "".join(rows)  # one row per arm

    board = {"name": "ae_board", "title": "Reconstruction", "protocol": "reconstruction",
             "entrant": ["algorithm", "backbone.options.width"], "datasets": ["colored_digits"],
             "selection": "val-mse", "metrics": ["test.mse"], "required_seeds": 2}
    (tmp_path / "ae_board.yaml").write_text(yaml.safe_dump(board))
    board_dir = tmp_path / "board"
    args = [str(tmp_path / "ae_board.yaml")]
    assert main(["leaderboard", "submit", *args, str(sweep_dir), "--board-dir", str(board_dir)]) == 0
    entries = {p.name: json.loads(p.read_text()) for p in (board_dir / "entries" / "ae_board").glob("*.json")}
    assert sorted(entries) == ["autoencoder--64.json", "autoencoder--8.json"]  # two widths, two entrants
    for entry in entries.values():
        result = entry["results"]["colored_digits"]
        # the claimed number is the mean over seeds of the stored errors at the chosen checkpoints
        by_hand = np.mean([load_arrays(sweep_dir / r["hash"] / "predictions" / f"step_{r['step']:07d}.npz")
                           ["test.error"].mean() for r in result["runs"]])
        assert result["metrics"]["test.mse"]["mean"] == pytest.approx(by_hand)
        assert result["seeds"] == [0, 1] and entry["selection"] == "val-mse"
    assert main(["leaderboard", "verify", *args, "--board-dir", str(board_dir)]) == 0
    capsys.readouterr()
    assert main(["leaderboard", "render", *args, "--board-dir", str(board_dir)]) == 0
    rendered = (board_dir / "ae_board.md").read_text()
    assert "Protocol: reconstruction" in rendered and "backbone.options.width" in rendered.splitlines()[4]


def test_the_plugin_implements_only_the_required_methods_and_the_rest_are_defaults():
    from harness.protocols.base import Protocol

    import reconstruction_plugin

    try:
        hooks = {name for name, value in vars(Protocol).items() if callable(value) and not name.startswith("_")}
        own = hooks & set(vars(reconstruction_plugin.Reconstruction))
        assert own == set(Protocol.REQUIRED + Protocol.REQUIRED_TO_TRAIN) == {"scores", "build", "batch", "record"}
        assert reconstruction_plugin.Reconstruction.missing() == []
    finally:  # importing the module registered it: leave the registries as they were
        PROTOCOLS._entries.pop("reconstruction", None)
        ALGORITHMS._entries.pop("autoencoder", None)
        sys.modules.pop("reconstruction_plugin", None)


def test_a_protocol_missing_a_required_method_is_refused_naming_it():
    from harness.protocols.base import Protocol

    class Scoreless(Protocol):
        trains = False

    class Unrecorded(Protocol):
        def scores(self, arrays, info):
            return {}

        def build(self, algorithm, backbone, cfg, dataset, state):
            return algorithm(backbone)

        def batch(self, split, positions, state):
            return split.inputs(positions)

    with pytest.raises(TypeError, match="protocol 'scoreless' \\(Scoreless\\) does not implement scores$"):
        Scoreless("scoreless")
    with pytest.raises(TypeError, match="does not implement record; a protocol whose runs do not train through "
                                        "the loop sets trains = False"):
        Unrecorded("unrecorded")
    Unrecorded.trains = False  # not trained by the loop: scores alone is enough
    assert Unrecorded("unrecorded").missing() == []


def test_the_loop_refuses_an_algorithm_of_a_protocol_it_does_not_train(tiny_cfg, monkeypatch):
    from harness.core.config import run_dir
    from harness.core.errors import HarnessError
    from harness.runs.run import train

    cfg = tiny_cfg()
    monkeypatch.setattr(ALGORITHMS.get("erm").obj, "protocol", "transfer")
    with pytest.raises(HarnessError, match="'erm' is written for the transfer protocol, whose runs another trial kind "
                                           "writes, not the training loop; the loop trains algorithms of the "
                                           ".*worst_group protocols"):
        train(cfg)
    assert not run_dir(cfg).exists()
