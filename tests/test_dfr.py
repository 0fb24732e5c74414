"""What makes DFR that method: its last layer is fitted on group-balanced draws of held-out
validation examples only, and the run holds that half out of everything selection reads."""
import json

import numpy as np
import pytest
import torch
from harness.algorithms import dfr
from torch import nn

from harness.core.errors import HarnessError
from harness.core.files import load_arrays
from harness.core.registry import ALGORITHMS
from harness.data.dataset import Column, Schema, Split
from harness.models.algorithm import HeldOut
from harness.models.backbones import Backbone
from harness.protocols.base import protocol
from harness.runs.run import build_dataset, train


def test_a_balanced_draw_takes_the_smallest_groups_size_from_every_group():
    g = np.array([0] * 10 + [1] * 3 + [2] * 7 + [3] * 5)
    rows = dfr.balanced_draw(g, np.random.default_rng(0))
    assert np.bincount(g[rows]).tolist() == [3, 3, 3, 3]
    assert len(set(rows.tolist())) == len(rows)  # without replacement


def make_dfr(held_out: HeldOut, **hp):
    entry = ALGORITHMS.get("dfr")
    hparams = {k: v.default for k, v in entry.hparams.items()} | hp
    algo = entry.obj(lambda: Backbone(nn.Flatten(), n_outputs=2), 2, 4, hparams, 8)
    algo.held_out = held_out
    return algo.eval()


def held_out_split(x, y, g, ids):
    schema = Schema((Column("y", "label", 2, ("0", "1")),))
    return HeldOut(Split.of(torch.tensor(x, dtype=torch.float), torch.tensor(ids), schema, {"y": torch.tensor(y)}),
                   torch.tensor(g), seed=3)


def test_the_head_is_fitted_only_on_group_balanced_draws_of_the_held_out_examples(monkeypatch):
    rng = np.random.default_rng(0)
    n = 60
    y = rng.integers(0, 2, n)
    spurious = np.where(rng.random(n) < 0.8, y, 1 - y)
    g = 2 * y + spurious
    x = np.stack([y + 0.3 * rng.standard_normal(n), spurious + 0.1 * rng.standard_normal(n)], 1)
    fits = []
    real_fit = dfr.LogisticRegression.fit

    def recording_fit(model, features, labels):
        fits.append((features.copy(), labels.copy(), model.C, model.l1_ratio))
        return real_fit(model, features, labels)

    monkeypatch.setattr(dfr.LogisticRegression, "fit", recording_fit)
    algo = make_dfr(held_out_split(x, y, g, np.arange(n)), C=0.3)
    algo.before_evaluation()
    assert len(fits) == algo.hp["retrains"] == 10
    standardised = (x - x.mean(0)) / (x.std(0) + 1e-8)
    smallest = np.bincount(g).min()
    for features, labels, c, penalty in fits:
        assert (c, penalty) == (0.3, 1.0)  # L1
        # every fitted row is a held-out example's (standardised) features with its label
        rows = [int(np.flatnonzero(np.isclose(standardised, f).all(1))[0]) for f in features]
        assert labels.tolist() == y[rows].tolist()
        assert np.bincount(g[rows], minlength=4).tolist() == [smallest] * 4  # group-balanced
    # predictions are the averaged, de-standardised regressions on the backbone's features
    probe = torch.tensor(x[:5], dtype=torch.float)
    logits = algo.predict(probe)
    assert bool(algo.fitted)
    expected = probe.double() @ algo.head_weight.double().T + algo.head_bias.double()
    assert torch.allclose(logits.double(), expected, atol=1e-5)
    # the re-fitted head reads the core feature: balanced draws undo the 80% spurious agreement
    accuracy = (algo.predict(torch.tensor(x, dtype=torch.float)).argmax(1).numpy() == y)
    assert all(accuracy[g == k].mean() >= 0.8 for k in range(4))


def test_before_any_refit_dfr_predicts_with_its_erm_head():
    algo = make_dfr(None)
    algo.before_evaluation()  # nothing held out: nothing fitted
    x = torch.randn(4, 2)
    assert not bool(algo.fitted)
    assert torch.allclose(algo.predict(x), algo.classifier(x))


def test_hold_out_halves_every_validation_group_by_seed_and_keeps_the_rest(tiny_cfg):
    cfg = tiny_cfg("algorithm.name=dfr")
    scorer = protocol("worst_group")
    halves = []
    for seed in (0, 0, 1):
        dataset = build_dataset(cfg)
        val_ids, val_groups = dataset.splits["val"].ids.clone(), dataset.annotated_groups("val").clone()
        state = scorer.prepare(cfg, dataset, torch.device("cpu"))
        held = scorer.hold_out(dataset, state, seed)
        kept = dataset.splits["val"].ids
        assert set(held.split.ids.tolist()).isdisjoint(kept.tolist())
        assert sorted(held.split.ids.tolist() + kept.tolist()) == sorted(val_ids.tolist())
        by_id = dict(zip(val_ids.tolist(), val_groups.tolist()))
        assert held.g.tolist() == [by_id[i] for i in held.split.ids.tolist()]
        assert state.source.by_split["val"].tolist() == [by_id[i] for i in kept.tolist()]
        assert state.annotated["val"].tolist() == [by_id[i] for i in kept.tolist()]
        for k in np.unique(val_groups.numpy()):
            total = int((val_groups == k).sum())
            assert int((held.g == k).sum()) == (total + 1) // 2
        halves.append(sorted(held.split.ids.tolist()))
    assert halves[0] == halves[1] != halves[2]


def test_a_dfr_run_stores_and_selects_on_the_other_half_and_records_the_held_out_ids(tiny_cfg):
    cfg = tiny_cfg("algorithm.name=dfr")
    all_val = set(build_dataset(cfg).splits["val"].ids.tolist())
    out = train(cfg)
    info = json.loads((out / "info.json").read_text())
    held = set(info["held_out"]["ids"])
    assert info["held_out"]["split"] == "val" and info["split_sizes"]["val"] == len(all_val) - len(held)
    for path in sorted((out / "predictions").glob("step_*.npz")):
        stored = set(load_arrays(path)["val.ids"].tolist())
        assert stored.isdisjoint(held) and stored | held == all_val
    state = torch.load(out / "checkpoint.pt", weights_only=True)["algorithm"]["model"]
    assert bool(state["fitted"])  # the stored predictions are the re-fitted head's


def test_dfr_needs_groups_and_refuses_none_before_writing_anything(tiny_cfg, tmp_path):
    with pytest.raises(HarnessError, match="trains on groups"):
        train(tiny_cfg("algorithm.name=dfr", "groups=none"))
    assert not (tmp_path / "runs").exists()
