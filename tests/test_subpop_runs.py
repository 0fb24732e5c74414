"""Method-specific checks of the methods added from SubpopBench's set: their hyperparameters are
drawn inside the declared ranges, they resume at the points where their per-run state matters,
and LISA refuses class groups. What every algorithm must do (train end to end with finite logs and
predictions, draws of the default's type, resume equality) is in tests/test_conformance.py."""
import pytest

from harness.core.errors import HarnessError
from harness.core.registry import ALGORITHMS, draw_hparams
from harness.runs.run import train

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
    defaults = draw_hparams(space, 0)
    assert all(isinstance(defaults[k], (int, float)) for k in declared)


def test_lisa_refuses_class_groups_before_writing_anything(tiny_cfg, tmp_path):
    with pytest.raises(HarnessError, match="two domains or more"):
        train(tiny_cfg("algorithm.name=lisa", "groups=classes"))
    assert not (tmp_path / "runs").exists()
