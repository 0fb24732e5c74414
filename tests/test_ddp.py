"""Data-parallel training: the SSL losses with cross-rank gathers under a DDP-wrapped MLP, and
runs through the engine (harness.runs.distributed): 2 gloo ranks on CPU, each
on half of the global batch, train what 1 process trains on the whole batch (SimCLR with
negatives gathered across ranks); a 2-rank run killed and resumed equals an uninterrupted one.
All 2-rank runs share one spawn (a spawn costs seconds of imports)."""
from __future__ import annotations

import json

import pytest
import torch

from harness.core import config as configs
from harness.core.errors import HarnessError
from harness.core.files import load_arrays, load_torch, read_jsonl
from harness.core.registry import ALGORITHMS
from harness.models.ssl_losses import info_nce
from harness.runs import distributed
from harness.runs.run import _check_data_parallel, train

STEPS, CUT = 6, 3


def cfg_of(tmp_path, name, views, *extra):
    return configs.load(None, [f"output_dir={tmp_path / 'runs'}", f"run_dir={tmp_path / name}", "algorithm.name=simclr",
                               f"steps={STEPS}", f"eval_every={CUT}", "backbone.options.width=16", "device=cpu",
                               "algorithm.hparams.batch_size=32", "algorithm.hparams.projector_depth=1",
                               f"algorithm.hparams.views={views}", "algorithm.hparams.lr=0.01", *extra])


class Interrupted(Exception):
    pass


def _two_ranks(same, whole, cut, losses_out):
    import torch.distributed as dist

    states = {kind: _train(kind, dist.get_rank(), 2) for kind in KINDS}
    states["simclr-local"] = _train("simclr", dist.get_rank(), 2, gathered=False)
    if dist.get_rank() == 0:
        torch.save(states, losses_out)
    train(same, progress=False)
    train(whole, progress=False)
    cls = ALGORITHMS.get("simclr").obj
    original = cls.update

    def dies_at_the_cut(self, batch, step):
        if step == CUT:
            raise Interrupted
        return original(self, batch, step)

    cls.update = dies_at_the_cut
    try:
        train(cut, progress=False)
    except Interrupted:
        pass
    finally:
        cls.update = original
    distributed.barrier()
    train(cut, progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    # views=none: the same inputs on every rank layout, so 2 ranks and 1 can agree
    same = cfg_of(tmp, "two", "none")
    noisy = [cfg_of(tmp, "whole", "gaussian_noise"), cfg_of(tmp, "cut", "gaussian_noise")]
    distributed.spawn(_two_ranks, 2, same, *noisy, str(tmp / "losses.pt"))
    one = train(cfg_of(tmp, "one", "none"), progress=False)
    return tmp, one


def test_two_ranks_train_what_one_process_trains_on_the_global_batch(runs):
    tmp, one = runs
    two = tmp / "two"
    a, b = read_jsonl(two / "results.jsonl"), read_jsonl(one / "results.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [CUT, STEPS]
    for x, y in zip(a, b):
        assert x["train_logs"]["loss"] == pytest.approx(y["train_logs"]["loss"], rel=1e-4)
        for split in ("val", "test"):
            assert x["metrics"][split]["rankme"] == pytest.approx(y["metrics"][split]["rankme"], rel=1e-3)
    got, want = load_torch(two / "checkpoint.pt")["algorithm"]["model"], load_torch(one / "checkpoint.pt")["algorithm"]["model"]
    for key in want:
        if want[key].is_floating_point():
            assert torch.allclose(got[key], want[key], atol=1e-4), (key, (got[key] - want[key]).abs().max())
    # both runs are the same config: one hash, whatever the number of ranks
    assert json.loads((two / "info.json").read_text())["hash"] == json.loads((one / "info.json").read_text())["hash"]


def test_a_two_rank_run_killed_and_resumed_equals_an_uninterrupted_one(runs):
    tmp, _ = runs
    whole, cut = tmp / "whole", tmp / "cut"
    assert (cut / "done").exists()
    assert [(r["step"], r["train_logs"], r["metrics"]) for r in read_jsonl(cut / "results.jsonl")] == \
        [(r["step"], r["train_logs"], r["metrics"]) for r in read_jsonl(whole / "results.jsonl")]
    for step in (CUT, STEPS):
        file = f"predictions/step_{step:07d}.npz"
        a, b = load_arrays(cut / file), load_arrays(whole / file)
        assert all((a[k] == b[k]).all() for k in b)
    assert len(load_torch(cut / "checkpoint.pt")["rng_ranks"]) == 2


def test_methods_that_cannot_run_data_parallel_or_split_the_batch_are_refused():
    jtt = configs.load(None, ["algorithm.name=jtt"])
    with pytest.raises(HarnessError, match="'jtt' does not run data-parallel"):
        _check_data_parallel(jtt, ALGORITHMS.get("jtt").obj, 2)
    odd = configs.load(None, ["algorithm.name=simclr", "algorithm.hparams.batch_size=33"])
    with pytest.raises(HarnessError, match="not divisible by WORLD_SIZE=2"):
        _check_data_parallel(odd, ALGORITHMS.get("simclr").obj, 2)


# --- the losses alone: DDP-wrapped MLP, 2 ranks × b against 1 rank × 2b -------------------------------

LOSS_STEPS, B = 4, 8


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 5))


def _data():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(LOSS_STEPS, 2 * B, 6, generator=gen)
    return x, x + 0.1 * torch.randn(x.shape, generator=gen)


def _loss(kind, z1, z2, gather=None, rank=0):
    from harness.models.ssl_losses import vicreg_loss

    if kind == "simclr":
        return info_nce(z1, z2, 0.2, gather=gather, rank=rank)
    if kind == "simclr1":
        return info_nce(z1, z2, 0.2, single_negative=True, gather=gather, rank=rank)
    return vicreg_loss(z1, z2, gather=gather)[0]


def _train(kind, rank=0, world=1, gathered=True):
    from harness.models.ssl_losses import distributed as process_group

    model = _model()
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x1, x2 = _data()
    gather, r = process_group() if gathered else (None, 0)
    b = 2 * B // world
    for step in range(LOSS_STEPS):
        part = slice(rank * b, (rank + 1) * b)
        loss = _loss(kind, model(x1[step, part]), model(x2[step, part]), gather, r)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (model.module if world > 1 else model).state_dict()


KINDS = ("simclr", "simclr1", "vicreg")


def test_two_gloo_ranks_train_what_one_rank_trains_on_the_global_batch(runs):
    """SimCLR (all negatives and one), VICReg: 2 DDP ranks × b = 1 rank × 2b after several
    SGD steps; with local negatives only (no gather) they differ, so the check has teeth."""
    states = torch.load(runs[0] / "losses.pt")
    start = _model().state_dict()
    for kind in KINDS:
        got, want = states[kind], _train(kind)
        assert any(not torch.allclose(want[k], start[k]) for k in want), "training changed nothing"
        for key in want:
            assert torch.allclose(got[key], want[key], atol=1e-5), (kind, key, (got[key] - want[key]).abs().max())
    local, want = states["simclr-local"], _train("simclr")
    assert any(not torch.allclose(local[k], want[k], atol=1e-5) for k in want)


# --- launchers: a trial on 2 ranks --------------------------------------------------------------------

def test_the_processes_launcher_runs_a_two_rank_trial_that_trains_what_one_process_trains(tmp_path):
    from harness.sweeps.launchers import make_launcher, parse_launcher
    from harness.sweeps.trials import Trial

    choice = parse_launcher({"name": "processes", "workers": 1, "ranks": 2})
    cfg = cfg_of(tmp_path, "two", "none")
    [outcome] = make_launcher(choice, tmp_path).run([Trial("train", cfg)])
    assert outcome.status == "done", outcome.error
    two, one = tmp_path / "two", train(cfg_of(tmp_path, "one", "none"), progress=False)
    record = json.loads((two / "trial.json").read_text())
    assert record["status"] == "done" and not (two / "running.json").exists()
    a, b = read_jsonl(two / "results.jsonl"), read_jsonl(one / "results.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [CUT, STEPS]
    for x, y in zip(a, b):
        assert x["train_logs"]["loss"] == pytest.approx(y["train_logs"]["loss"], rel=1e-4)
    got, want = load_torch(two / "checkpoint.pt"), load_torch(one / "checkpoint.pt")
    assert len(got["rng_ranks"]) == 2 and "rng_ranks" not in want  # it did run on two ranks
    for key, value in want["algorithm"]["model"].items():
        if value.is_floating_point():
            assert torch.allclose(got["algorithm"]["model"][key], value, atol=1e-4), key


def test_a_trial_that_cannot_run_on_ranks_fails_with_the_reason_recorded(tmp_path):
    from harness.sweeps.launchers import execute_on_ranks
    from harness.sweeps.trials import Trial

    cfg = configs.load(None, [f"output_dir={tmp_path}", f"run_dir={tmp_path / 'jtt'}", "algorithm.name=jtt",
                              "steps=2", "eval_every=2", "algorithm.hparams.id_steps=1", "device=cpu"])
    outcome = execute_on_ranks(Trial("train", cfg), 2)
    assert outcome.status == "failed" and outcome.error.startswith("RankFailed: rank ")
    assert "'jtt' does not run data-parallel" in outcome.error.splitlines()[0]
    assert "'jtt' does not run data-parallel" in (tmp_path / "jtt" / "error.txt").read_text()
