"""DCI as the reference computes it: our ``dci`` against disentanglement_lib's recipe written out
here (one ``GradientBoostingClassifier`` per factor, its ``feature_importances_``, D and C from
scipy's entropy with its 1e-11 floor, C weighted by each factor's share of importance), on four
families of codes made on the fly: exact, rotated, mixed and a trained-like nonlinear map of the
factors. Also: the per-factor fits in processes (cut into pieces of stages) give the numbers of a
plain loop, the protocol scores with the run's threads, and a board cannot name another estimator."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from scipy.stats import entropy
from sklearn.ensemble import GradientBoostingClassifier

from harness.core.chains import wrap_cuts
from harness.core.errors import HarnessError
from harness.leaderboards import board as boards
from harness.protocols.base import protocol
from harness.protocols.factors import DCI_TRAIN_FRACTION, dci

SIZES = (3, 4, 5, 6)
POINTS = 600


def codes_of(family: str, factors: np.ndarray) -> np.ndarray:
    """Codes of one family for the factor classes (n, K): each factor scaled to [-0.5, 0.5]."""
    rng = np.random.RandomState(1)
    k = factors.shape[1]
    x = factors / (np.array(SIZES) - 1) - 0.5
    exact = x + 0.02 * rng.randn(len(x), k)
    if family == "exact":
        return exact
    if family == "rotated":  # a random orthogonal map of the exact codes: every code mixes every factor
        return exact @ np.linalg.qr(rng.randn(k, k))[0]
    if family == "mixed":
        return x @ rng.randn(k, k) + 0.02 * rng.randn(len(x), k)
    # trained-like: mostly one factor per code through a saturating map, some leakage and noise
    return np.tanh(2 * x @ (np.eye(k) + 0.2 * rng.randn(k, k))) + 0.1 * np.sin(3 * x[:, ::-1]) \
        + 0.05 * rng.randn(len(x), k)


FAMILIES = ("exact", "rotated", "mixed", "trained")


def disentanglement_lib_dci(codes: np.ndarray, factors: np.ndarray) -> dict[str, float]:
    """The reference's arithmetic, on our fit/score split (the first 2/3 to fit)."""
    n = int(len(codes) * DCI_TRAIN_FRACTION)
    importance = np.zeros((codes.shape[1], factors.shape[1]))
    train, test = [], []
    for k in range(factors.shape[1]):
        model = GradientBoostingClassifier(random_state=0).fit(codes[:n], factors[:n, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train.append(np.mean(model.predict(codes[:n]) == factors[:n, k]))
        test.append(np.mean(model.predict(codes[n:]) == factors[n:, k]))
    per_code = 1 - entropy(importance.T + 1e-11, base=importance.shape[1])
    per_factor = 1 - entropy(importance + 1e-11, base=importance.shape[0])
    return {"dci_d": float(np.sum(per_code * importance.sum(1) / importance.sum())),
            "dci_c": float(np.sum(per_factor * importance.sum(0) / importance.sum())),
            "dci_i": float(np.mean(test)), "dci_i_train": float(np.mean(train))}


@pytest.fixture(scope="module")
def families() -> dict[str, tuple[np.ndarray, np.ndarray, dict[str, float]]]:
    """Per family: codes, factors and the reference's numbers."""
    factors = np.stack([np.random.RandomState(0).randint(0, s, POINTS) for s in SIZES], 1)
    out = {}
    for family in FAMILIES:
        codes = codes_of(family, factors)
        out[family] = codes, factors, disentanglement_lib_dci(codes, factors)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_dci_is_the_reference_on_every_family(families, family):
    codes, factors, reference = families[family]
    ours = dci(codes, factors)
    assert set(ours) == set(reference)
    for key in reference:
        assert ours[key] == pytest.approx(reference[key], abs=1e-6), key


def test_the_families_span_the_range_the_agreement_is_about(families):
    d = {family: reference["dci_d"] for family, (_, _, reference) in families.items()}
    assert d["exact"] > 0.95 and d["trained"] > 0.5 and d["rotated"] < 0.4 and d["mixed"] < 0.4


@pytest.mark.parametrize("workers", [2, 3])
def test_fits_in_processes_give_the_numbers_of_a_plain_loop(families, workers):
    codes, factors, _ = families["trained"]
    assert sum(len(c) > 1 for c in wrap_cuts([100 * k for k in SIZES], workers)) == 1  # a fit in two pieces
    assert dci(codes, factors, workers=workers) == dci(codes, factors, workers=1)


def arrays_of(codes: np.ndarray, factors: np.ndarray) -> dict[str, np.ndarray]:
    zeros = np.zeros(len(codes))
    return {"test.mu": codes.astype(np.float32), "test.factors": factors, "test.rec": zeros, "test.kl": zeros}


def test_the_protocol_scores_with_the_runs_threads_and_the_reference_estimator(families):
    codes, factors, reference = families["trained"]
    scorer = protocol("disentanglement")
    info = {"factors": ["a", "b", "c", "d"], "threads": 1}
    one = scorer.scores(arrays_of(codes, factors), info)["test"]
    two = scorer.scores(arrays_of(codes, factors), {**info, "threads": 2})["test"]
    assert one == two
    assert one["dci_d"] == dci(codes.astype(np.float32).astype(np.float64), factors)["dci_d"]
    assert abs(one["dci_d"] - reference["dci_d"]) < 1e-6  # float32 codes: the reference's numbers


def test_a_board_cannot_choose_another_dci_estimator(tmp_path):
    """The histogram estimator the first disentanglement board was scored with is gone with its
    entries: a board definition that still names one is refused, naming the accepted keys."""
    definition = yaml.safe_load((boards.BOARD_DIR / "disentanglement.yaml").read_text())
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump({**definition, "scoring": {"dci_estimator": "hist_gradient_boosting"}}))
    with pytest.raises(HarnessError, match="scoring"):
        boards.load_board(str(path))
