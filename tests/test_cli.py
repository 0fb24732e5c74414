import subprocess
import sys

import pytest
import yaml

from harness.cli import main


@pytest.mark.parametrize("overrides, message", [
    (["algorithm.hparms.lr=1"], "unknown config key 'algorithm.hparms'; accepted: algorithm.name, algorithm.hparams"),
    (["stepz=10"], "unknown config key 'stepz'; accepted: dataset, algorithm"),
    (["steps=ten"], "steps must be an integer >= 1, got 'ten'"),
    (["steps=0"], "steps must be an integer >= 1, got 0"),
    (["seed=-1"], "seed must be an integer >= 0, got -1"),
    (["algorithm.hparams_seed=-2"], "algorithm.hparams_seed must be an integer >= 0, got -2"),
    (["run_dir=3"], "run_dir must be a path or null, got 3"),
    (["algorithm.name=nope"], "unknown algorithm 'nope'; accepted: balanced_softmax, beta_tcvae"),
    (["algorithm.hparams.etaa=1"], "unknown hyperparameter of erm (algorithm.hparams.etaa) 'etaa'; accepted: batch_size"),
    (["algorithm.name=group_dro", "algorithm.hparams.eta=high"], "'algorithm.hparams.eta' must be of type float"),
    (["dataset.options.sed=1"], "unknown option (dataset.options.sed) 'sed'; accepted: seed, test_fraction"),
    (["groups=sometimes"], "unknown group source 'sometimes'; accepted: annotated, classes, none"),
    (["steps"], "config file 'steps' does not exist"),
])
def test_bad_input_exits_2_naming_the_key(overrides, message, tmp_path, capsys):
    code = main(["train", f"output_dir={tmp_path / 'runs'}", "steps=5", *overrides])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_bad_yaml_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed\n")
    assert main(["train", str(bad)]) == 2
    assert "is not valid YAML" in capsys.readouterr().err


def test_yaml_file_plus_overrides(tmp_path, capsys):
    spec = tmp_path / "run.yaml"
    spec.write_text(yaml.safe_dump({"algorithm": {"name": "group_dro", "hparams": {"eta": 0.2}}, "steps": 7}))
    assert main(["train", str(spec), "--print-config", "algorithm.hparams.lr=1e-2", "seed=2"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["algorithm"]["hparams"]["eta"] == 0.2
    assert cfg["algorithm"]["hparams"]["lr"] == 0.01
    assert (cfg["steps"], cfg["seed"]) == (7, 2)


def test_list_shows_names_and_hparams(capsys):
    assert main(["list", "algorithms"]) == 0
    out = capsys.readouterr().out
    assert "group_dro" in out and "eta=0.01" in out


def test_console_entry_point_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness", "train", "steps=20", "eval_every=10",
                           f"output_dir={tmp_path}", "algorithm.name=group_dro", "--no-progress"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "val-wga" in proc.stdout and "run folder:" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "harness", "train", "algorithm.name=xyz"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown algorithm 'xyz'" in proc.stderr


def test_help_lists_every_command_without_importing_torch_or_the_commands():
    """`harness --help` builds its parser from the summaries in cli.py alone: importing torch,
    pandas or scipy there costs seconds on every call."""
    code = ("import sys; from harness.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'pandas', 'scipy', 'sklearn', 'matplotlib', 'harness.commands.train')"
            " if m in sys.modules]\nprint('heavy:', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "heavy: []" in out
    for name in ("quickstart", "train", "discover", "probe", "features", "sweep", "collect", "leaderboard", "list"):
        assert f"\n    {name}" in out


def test_a_command_gets_its_own_options_when_named(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--print-config" in capsys.readouterr().out
