"""The SSL losses on hand-made embeddings (their 2-rank DDP check is in tests/test_ddp.py)."""
from __future__ import annotations

import pytest
import torch

from harness.models.ssl_losses import directclr_loss, info_nce, vicreg_terms


def test_info_nce_of_identical_views_is_below_that_of_random_ones():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(32, 16, generator=gen)
    for single in (False, True):
        same = info_nce(z, z.clone(), 0.2, single_negative=single)
        rand = info_nce(z, torch.randn(32, 16, generator=gen), 0.2, single_negative=single)
        assert same < rand, (single, same, rand)


def test_info_nce_matches_its_definition_by_hand():
    gen = torch.Generator().manual_seed(1)
    z1, z2, t = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen), 0.5
    v = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = v @ v.T / t
    total = 0.0
    for i in range(8):
        pos = (i + 4) % 8
        others = [j for j in range(8) if j != i]
        total += -(sim[i, pos] - torch.logsumexp(sim[i, others], 0))
    assert torch.allclose(info_nce(z1, z2, t), total / 8, atol=1e-5)
    # one negative: the other view of the next example
    single = 0.0
    for i in range(8):
        pos, neg = (i + 4) % 8, ((i + 1) % 4 + (4 if i < 4 else 0))
        single += -(sim[i, pos] - torch.logsumexp(torch.stack([sim[i, pos], sim[i, neg]]), 0))
    assert torch.allclose(info_nce(z1, z2, t, single_negative=True), single / 8, atol=1e-5)


def test_vicreg_variance_is_zero_at_unit_std_and_positive_below_it():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(256, 8, generator=gen)
    z = (z - z.mean(0)) / z.std(0)  # exactly unit std per dimension
    assert vicreg_terms(z, z)["variance"].item() == pytest.approx(0.0, abs=1e-3)
    assert vicreg_terms(z * 1.5, z * 1.5)["variance"].item() == 0.0  # a hinge: above 1 costs nothing
    assert vicreg_terms(0.5 * z, 0.5 * z)["variance"].item() == pytest.approx(0.5, abs=1e-3)
    terms = vicreg_terms(z, z)
    assert terms["invariance"].item() == 0.0
    # decorrelated dimensions cost little; two copies of one dimension cost their covariance
    dup = torch.cat([z[:, :1], z[:, :1]], 1)
    assert vicreg_terms(dup, dup)["covariance"].item() == pytest.approx(2 * 2 * 1.0 / 2, rel=1e-3)


def test_directclr_uses_exactly_the_first_d0_coordinates():
    gen = torch.Generator().manual_seed(0)
    h1 = torch.randn(16, 10, generator=gen, requires_grad=True)
    h2 = torch.randn(16, 10, generator=gen)
    loss = directclr_loss(h1, h2, d0=4)
    loss.backward()
    assert (h1.grad[:, :4] != 0).any() and (h1.grad[:, 4:] == 0).all()
    changed = h2.clone()
    changed[:, 4:] = torch.randn(16, 6, generator=gen)
    assert torch.equal(directclr_loss(h1, changed, d0=4), loss)
    assert torch.allclose(loss, info_nce(h1[:, :4], h2[:, :4], 0.1))
    with pytest.raises(ValueError, match="d0"):
        directclr_loss(h1, h2, d0=11)
