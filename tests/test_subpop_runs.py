"""Every method added from SubpopBench's set trains end to end through the run loop, resumes
where it needs per-run state, and draws its hyperparameters inside the declared spaces."""
import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.core.files import load_arrays, read_jsonl
from harness.core.registry import ALGORITHMS, draw_hparams
from harness.runs.run import train

# name -> overrides for a 20-step run (groups annotated for methods that need groups, the default)
RUNS = {
    "cvar_dro": [], "lff": [], "mixup": [], "focal": [], "cb_loss": [], "balanced_softmax": [],
    "irm": ["algorithm.hparams.anneal_steps=10"], "vrex": ["algorithm.hparams.anneal_steps=10"],
    "lisa": [], "coral": [], "mmd": [],
    "ldam": ["algorithm.hparams.drw_step=10"],
    "crt": ["algorithm.hparams.erm_steps=10"], "reweight_crt": ["algorithm.hparams.erm_steps=10"],
}

# name -> {hparam: (low, high) or a set of values} for the hparams each method declares
SPACES = {
    "cvar_dro": {"alpha": (0.01, 1.0)},
    "lff": {"q": (0.05, 0.95)},
    "irm": {"penalty_weight": (0.1, 1e5), "anneal_steps": (1, 10_000)},
    "vrex": {"penalty_weight": (0.1, 1e5), "anneal_steps": (1, 10_000)},
    "mixup": {"alpha": (0.1, 10.0)},
    "lisa": {"alpha": (0.1, 10.0), "p_sel": (0.0, 1.0)},
    "coral": {"penalty_weight": (0.1, 10.0)},
    "mmd": {"penalty_weight": (0.1, 10.0)},
    "focal": {"gamma": (0.5, 5.0)},
    "ldam": {"max_m": (0.1, 10 ** -0.1), "scale": {10.0, 30.0}, "drw_step": {-1}},
    "cb_loss": {"beta": (1 - 1e-2, 1 - 1e-5)},
    "balanced_softmax": {},
    "crt": {"erm_steps": {100, 250, 500, 1000}},
    "reweight_crt": {"erm_steps": {100, 250, 500, 1000}},
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_trains_end_to_end_with_finite_predictions(tiny_cfg, name):
    run = train(tiny_cfg(f"algorithm.name={name}", "steps=20", "eval_every=10", *RUNS[name]))
    assert (run / "done").exists()
    rows = read_jsonl(run / "results.jsonl")
    assert [r["step"] for r in rows] == [10, 20]
    assert all(np.isfinite(v) for r in rows for v in r["train_logs"].values())
    preds = load_arrays(run / "predictions" / "step_0000020.npz")
    for split in ("train", "val", "test"):
        probs = preds[f"{split}.probs"]
        assert probs.shape == (len(preds[f"{split}.ids"]), 2) and np.isfinite(probs).all()


@pytest.mark.parametrize("name", sorted(SPACES))
def test_draws_lie_inside_the_declared_spaces(name):
    space = ALGORITHMS.get(name).hparams
    declared = SPACES[name]
    own = {k for k in space if k not in ("lr", "weight_decay", "batch_size", "optimizer")}
    assert own == set(declared)
    for draw in (1, 2, 3):
        values = draw_hparams(space, draw)
        for key, allowed in declared.items():
            value = values[key]
            if isinstance(allowed, set):
                assert value in allowed, (name, key, value)
            else:
                assert allowed[0] <= value <= allowed[1], (name, key, value)
            assert type(value) is type(space[key].default), (name, key, value)
    defaults = draw_hparams(space, 0)
    assert all(isinstance(defaults[k], (int, float)) for k in declared)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("name, extra", [
    ("crt", ["algorithm.hparams.erm_steps=25"]),  # resumed in the head stage: its optimizer state must survive
    ("lff", []),  # per-example loss averages
    ("irm", ["algorithm.hparams.anneal_steps=45"]),  # the optimizer restarts after the resume
])
def test_resume_after_an_interruption_equals_an_uninterrupted_run(tiny_cfg, tmp_path, monkeypatch, name, extra):
    whole = train(tiny_cfg(f"algorithm.name={name}", *extra, "run_dir=" + str(tmp_path / "whole")))
    cls = ALGORITHMS.get(name).obj
    original = cls.update

    def dies_at_step_50(self, batch, step):
        if step == 50:
            raise Interrupted
        return original(self, batch, step)

    cfg = tiny_cfg(f"algorithm.name={name}", *extra, "run_dir=" + str(tmp_path / "cut"))
    with monkeypatch.context() as m:
        m.setattr(cls, "update", dies_at_step_50)
        with pytest.raises(Interrupted):
            train(cfg)
    assert [r["step"] for r in read_jsonl(tmp_path / "cut" / "results.jsonl")] == [20, 40]
    train(cfg)
    assert metrics_of(tmp_path / "cut") == metrics_of(whole)


def metrics_of(run):
    return [(r["step"], r["train_logs"], r["metrics"]) for r in read_jsonl(run / "results.jsonl")]


def test_lisa_refuses_class_groups_before_writing_anything(tiny_cfg, tmp_path):
    with pytest.raises(HarnessError, match="two domains or more"):
        train(tiny_cfg("algorithm.name=lisa", "groups=classes"))
    assert not (tmp_path / "runs").exists()
