"""Every hyperparameter and option is checked when a config or spec is resolved: a bad value is
exit 2 with one line and nothing written; a run that becomes non-finite fails, never done."""
from __future__ import annotations

import pytest
import yaml
from conftest import tiny_spec

from harness.cli import main
from harness.core import config
from harness.core.errors import HarnessError, RunDiverged
from harness.core.registry import ALGORITHMS, BACKBONES, draw_hparams
from harness.runs.run import train
from harness.sweeps import sweep
from harness.sweeps.launchers import Local
from harness.sweeps.trials import ERROR, state

BAD = [
    ("algorithm.hparams.lr=inf", "algorithm.hparams.lr must be a finite number > 0, got inf"),
    ("algorithm.hparams.lr=nan", "algorithm.hparams.lr must be a finite number > 0, got nan"),
    ("algorithm.hparams.lr=-0.1", "algorithm.hparams.lr must be a finite number > 0, got -0.1"),
    ("algorithm.hparams.weight_decay=-1", "algorithm.hparams.weight_decay must be a finite number >= 0, got -1.0"),
    ("algorithm.hparams.batch_size=-4", "algorithm.hparams.batch_size must be an integer >= 1, got -4"),
    ("algorithm.hparams.batch_size=0", "algorithm.hparams.batch_size must be an integer >= 1, got 0"),
    ("algorithm.hparams.optimizer=adagrad", "algorithm.hparams.optimizer must be one of adam, adamw, sgd, got 'adagrad'"),
    ("backbone.options.width=-3", "backbone.options.width must be an integer >= 1, got -3"),
    ("backbone.options.dropout=2.0", "backbone.options.dropout must be a finite number >= 0 and < 1, got 2.0"),
    ("dataset.options.val_fraction=0", "dataset.options.val_fraction must be a finite number > 0 and < 1, got 0.0"),
    ("dataset.options.test_fraction=1", "dataset.options.test_fraction must be a finite number > 0 and < 1, got 1.0"),
]


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("override, message", BAD)
def test_a_bad_hyperparameter_is_exit_2_with_one_line_and_nothing_written(override, message, tmp_path, capsys):
    extra = ["algorithm.name=group_dro"] if "eta" in override else []
    assert main(["train", f"output_dir={tmp_path / 'runs'}", "steps=5", override, *extra]) == 2
    err = capsys.readouterr().err
    assert err == f"harness: error: {message}\n"
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("override, message", [
    ("algorithm.hparams.eta=nan", "algorithm.hparams.eta must be a finite number >= 0, got nan"),
    ("algorithm.hparams.eta=inf", "algorithm.hparams.eta must be a finite number >= 0, got inf"),
])
def test_a_bad_group_dro_eta_is_refused_by_train_and_by_discover_and_sweep(override, message, tmp_path, capsys):
    assert main(["train", f"output_dir={tmp_path / 'runs'}", "algorithm.name=group_dro", override]) == 2
    assert capsys.readouterr().err == f"harness: error: {message}\n"
    spec = tmp_path / "spec.yaml"
    key, value = override.split("=")
    spec.write_text(yaml.safe_dump(tiny_spec(algorithms=[{"name": "group_dro", "overrides": {key: float(value)}}])))
    assert main(["sweep", str(spec), "--dir", str(tmp_path / "sweep")]) == 2
    assert capsys.readouterr().err == f"harness: error: {message}\n"
    assert files_under(tmp_path) == ["spec.yaml"]


def test_discover_refuses_bad_hyperparameters_before_writing(tmp_path, capsys):
    assert main(["discover", f"output_dir={tmp_path / 'runs'}", "algorithm.name=xrm",
                 "algorithm.hparams.batch_size=0"]) == 2
    assert "algorithm.hparams.batch_size must be an integer >= 1, got 0" in capsys.readouterr().err
    assert files_under(tmp_path) == []


def test_every_hyperparameter_declares_what_it_accepts_and_every_draw_satisfies_it():
    for entry in [*ALGORITHMS.entries(), *BACKBONES.entries()]:
        for name, hp in entry.hparams.items():
            declared = hp.items or hp  # a sequence's constraints are its items'
            assert isinstance(hp.default, bool) or (declared.low, declared.high, declared.choices) != (None, None, None), \
                f"{entry.name}.{name} declares no constraint"
        for draw in range(40):
            for name, value in draw_hparams(entry.hparams, draw).items():
                assert entry.hparams[name].check(name, value) == value


def test_backbone_options_are_checked_by_the_backbone_that_builds_them():
    from harness.models.backbones import backbone_factory
    with pytest.raises(HarnessError, match="each item of backbone option 'channels' of cnn must be an integer >= 1"):
        backbone_factory("cnn", (3, 8, 8), {"channels": (4, 0)})


def test_a_run_whose_loss_becomes_non_finite_fails_and_is_never_done(tiny_cfg, capsys):
    cfg = tiny_cfg("algorithm.hparams.lr=1e30")
    with pytest.raises(RunDiverged, match=r"non-finite values by step 20: training loss nan, train.probs"):
        train(cfg)
    out = config.run_dir(cfg)
    assert not (out / "done").exists() and not list((out / "predictions").glob("*.npz"))
    assert main(["train", f"output_dir={cfg['output_dir']}", "steps=60", "eval_every=20",
                 "backbone.options.width=64", "algorithm.hparams.lr=1e30"]) == 1
    assert capsys.readouterr().err.startswith("harness: run failed: non-finite values by step 20")


def test_a_diverging_trial_of_a_sweep_is_failed_with_its_reason(tmp_path):
    spec = sweep.parse_spec(tiny_spec(algorithms=[{"name": "group_dro", "overrides": {"algorithm.hparams.eta": 1e30}}],
                                      hparam_draws=1, seeds=1))
    report = sweep.run_sweep(spec, tmp_path, Local())
    [(digest, error)] = report.failed.items()
    assert "RunDiverged: non-finite values" in error
    [trial] = sweep.Plan(spec, tmp_path).downstream()[0]
    assert state(trial) == "failed" and "non-finite" in (trial.dir / ERROR).read_text()
    assert not (trial.dir / "done").exists()


def test_option_refuses_non_finite_numbers_even_without_a_range():
    from harness.core.options import Option
    with pytest.raises(HarnessError, match="x must be a finite number, got inf"):
        Option(1.0, float).check("x", float("inf"))
