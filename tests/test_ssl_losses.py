"""The SSL losses on hand-made embeddings, and 2-rank DDP (gloo, CPU) against 1 rank on the
global batch with negatives and statistics gathered across ranks."""
from __future__ import annotations

import os
import socket

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


# --- DDP: 2 ranks × b equal 1 rank × 2b -------------------------------------------------------------

STEPS, B = 4, 8


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 5))


def _data():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, 2 * B, 6, generator=gen)
    return x, x + 0.1 * torch.randn(x.shape, generator=gen)


def _loss(kind, z1, z2, gather=None, rank=0):
    from harness.models.ssl_losses import vicreg_loss

    if kind == "simclr":
        return info_nce(z1, z2, 0.2, gather=gather, rank=rank)
    if kind == "simclr1":
        return info_nce(z1, z2, 0.2, single_negative=True, gather=gather, rank=rank)
    return vicreg_loss(z1, z2, gather=gather)[0]


def _train(kind, rank=0, world=1, gathered=True):
    from harness.models.ssl_losses import distributed

    model = _model()
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x1, x2 = _data()
    gather, r = distributed() if gathered else (None, 0)
    b = 2 * B // world
    for step in range(STEPS):
        part = slice(rank * b, (rank + 1) * b)
        loss = _loss(kind, model(x1[step, part]), model(x2[step, part]), gather, r)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (model.module if world > 1 else model).state_dict()


KINDS = ("simclr", "simclr1", "vicreg")


def _worker(rank, world, port, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        states = {kind: _train(kind, rank, world) for kind in KINDS}
        states["simclr-local"] = _train("simclr", rank, world, gathered=False)
        if rank == 0:
            torch.save(states, out)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_train_what_one_rank_trains_on_the_global_batch(tmp_path):
    """SimCLR (all negatives and one), VICReg: 2 DDP ranks × b = 1 rank × 2b after several
    SGD steps; with local negatives only (no gather) they differ, so the check has teeth."""
    import torch.multiprocessing as mp

    out = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    states = torch.load(out)
    start = _model().state_dict()
    for kind in KINDS:
        got, want = states[kind], _train(kind)
        assert any(not torch.allclose(want[k], start[k]) for k in want), "training changed nothing"
        for key in want:
            assert torch.allclose(got[key], want[key], atol=1e-5), (kind, key, (got[key] - want[key]).abs().max())
    local, want = states["simclr-local"], _train("simclr")
    assert any(not torch.allclose(local[k], want[k], atol=1e-5) for k in want)
