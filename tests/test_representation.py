"""RankMe and linear CKA on matrices whose answers are known."""
import numpy as np
import pytest
from scipy.stats import ortho_group

from harness.models.representation import cka_matrix, linear_cka, rankme, spectrum


def test_rankme_of_an_isotropic_gaussian_is_near_full_rank():
    x = np.random.default_rng(0).normal(size=(4000, 32))
    assert 31.0 < rankme(spectrum(x)) <= 32.0


@pytest.mark.parametrize("k", [1, 3, 7])
def test_rankme_of_a_rank_k_matrix_is_near_k(k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(2000, k)) @ rng.normal(size=(k, 40))
    s = spectrum(x)
    assert np.sum(s > 1e-8 * s[0]) == k
    assert k - 0.5 < rankme(s) <= k + 1e-3


def test_rankme_by_hand_and_uneven_spectrum():
    # two equal singular values: p = (1/2, 1/2) (+ eps) → exp(log 2) = 2
    assert rankme(np.array([3.0, 3.0, 0.0])) == pytest.approx(2.0, abs=1e-5)
    p = np.array([0.75, 0.25])
    assert rankme(np.array([3.0, 1.0])) == pytest.approx(np.exp(-(p * np.log(p)).sum()), abs=1e-5)
    assert np.isnan(rankme(np.zeros(3)))


def test_linear_cka_is_one_for_identical_features_and_by_hand():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 10))
    assert linear_cka(x, x) == pytest.approx(1.0)
    # by hand: centred one-dimensional features are a correlation squared
    a, b = rng.normal(size=(300, 1)), rng.normal(size=(300, 1))
    assert linear_cka(a, b) == pytest.approx(np.corrcoef(a[:, 0], b[:, 0])[0, 1] ** 2)


def test_linear_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 12))
    y = np.tanh(x @ rng.normal(size=(12, 8))) + 0.5 * rng.normal(size=(400, 8))
    base = linear_cka(x, y)
    assert 0.1 < base < 0.99
    q = ortho_group.rvs(12, random_state=3)
    assert linear_cka(x @ q, y) == pytest.approx(base)
    assert linear_cka(x, 7.5 * y) == pytest.approx(base)
    assert linear_cka(0.01 * x @ q, 3 * y + 4) == pytest.approx(base)  # shifts are centred away
    # not invariant to an anisotropic scaling: CKA is not CCA
    assert linear_cka(x * np.r_[100.0, np.ones(11)], y) != pytest.approx(base, abs=1e-3)


def test_linear_cka_of_independent_features_is_small_and_matrix_is_symmetric():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(2000, 5)), rng.normal(size=(2000, 5))
    assert linear_cka(x, y) < 0.05
    m = cka_matrix([x, y, x])
    assert np.allclose(m, m.T) and np.allclose(np.diag(m), 1.0) and m[0, 2] == pytest.approx(1.0)


def test_linear_cka_refuses_mismatched_examples():
    with pytest.raises(ValueError, match="one row per example"):
        linear_cka(np.zeros((3, 2)), np.zeros((4, 2)))
