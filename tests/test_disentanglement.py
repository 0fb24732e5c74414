"""The disentanglement protocol's arithmetic (HFS, DCI, MIG, probes) and its VAEs' pieces.

Every VAE also goes through tests/test_conformance.py on the protocol's small dataset: one update,
records, scores, a checkpoint round trip and a run interrupted and resumed bit-identically.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from harness.algorithms.vae import BetaTCVAE, BetaVAE, hfs_penalty

from harness.core import config as configs
from harness.core.errors import HarnessError
from harness.protocols.factors import dci, dci_from_importances, mig, probe_accuracy
from harness.runs.run import train

PAIR = torch.tensor([[0, 1]])


def test_hfs_is_zero_when_the_batch_fills_the_product_of_its_marginals():
    grid = torch.tensor([[a, b] for a in (0.0, 1.0, 3.0) for b in (-1.0, 2.0)])
    assert hfs_penalty(grid, PAIR).item() == 0.0
    # a third latent outside the pair changes nothing
    assert hfs_penalty(torch.cat([grid, torch.randn(6, 1)], 1), PAIR).item() == 0.0


def test_hfs_is_the_largest_squared_distance_from_a_product_point_to_the_batch():
    diagonal = torch.tensor([[0.0, 0.0], [1.0, 1.0]], requires_grad=True)
    # product points (0, 1) and (1, 0) are each 1 away (squared) from the nearest batch point
    value = hfs_penalty(diagonal, PAIR)
    assert value.item() == pytest.approx(1.0)
    value.backward()
    assert diagonal.grad.abs().sum() > 0, "gradients flow into the batch's means"
    # pairs add up; a pair whose latents fill their product adds nothing
    three = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    assert hfs_penalty(three, torch.tensor([[0, 1], [0, 2], [1, 2]])).item() == pytest.approx(0.0)
    corner = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])  # product point (2, 2) is 4 from both
    assert hfs_penalty(corner, PAIR).item() == pytest.approx(4.0)


def test_hfs_value_and_gradient_equal_differentiating_through_max_and_min():
    torch.manual_seed(0)
    mu = torch.randn(12, 4, requires_grad=True)
    pairs = torch.tensor([[0, 1], [2, 3], [1, 3]])
    a, b = mu[:, pairs[:, 0]], mu[:, pairs[:, 1]]
    direct = (((a[:, None, None] - a[None, None, :]) ** 2 + (b[None, :, None] - b[None, None, :]) ** 2)
              .amin(2).flatten(0, 1).amax(0).sum())
    (want,) = torch.autograd.grad(direct, mu)
    value = hfs_penalty(mu, pairs)
    (got,) = torch.autograd.grad(value, mu)
    assert value.item() == pytest.approx(direct.item())
    assert torch.allclose(got, want) and got.abs().sum() > 0


def factor_table(n: int, sizes: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    return np.stack([rng.randint(0, s, n) for s in sizes], 1)


SIZES = (3, 6, 10)


def test_dci_is_near_one_for_codes_equal_to_the_factors_and_near_zero_for_one_mixture():
    factors = factor_table(900, SIZES)
    rng = np.random.RandomState(1)
    scaled = factors / (np.array(SIZES) - 1)
    exact = np.concatenate([scaled, np.zeros((900, 2))], 1) + 0.01 * rng.randn(900, 5)
    scores = dci(exact, factors)
    assert scores["dci_d"] > 0.95 and scores["dci_c"] > 0.9 and scores["dci_i"] > 0.95
    mixed = np.repeat(scaled.sum(1, keepdims=True), 5, 1) + 0.01 * rng.randn(900, 5)
    scores = dci(mixed, factors)
    assert scores["dci_d"] < 0.05 and scores["dci_c"] < 0.05


def test_dci_from_an_importance_matrix_by_hand():
    # code 0 only explains factor 0, code 1 splits evenly: D = 0.5·1 + 0.5·0 = 0.5
    importance = np.array([[1.0, 0.0], [0.5, 0.5]])
    scores = dci_from_importances(importance, 0.7)
    p = importance.sum(1) / importance.sum()                       # code weights 1/2, 1/2
    assert scores["dci_d"] == pytest.approx(p[0] * 1.0 + p[1] * 0.0)
    # factor 0: importances (1, 0.5) over codes → 1 − H_2(2/3, 1/3); factor 1: (0, 1) → 1
    h = -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)) / np.log(2)
    assert scores["dci_c"] == pytest.approx(((1 - h) + 1.0) / 2)
    assert scores["dci_i"] == 0.7


def test_mig_is_near_one_for_exact_codes_and_near_zero_for_a_factor_no_code_captures():
    factors = factor_table(2000, SIZES)
    rng = np.random.RandomState(2)
    exact = factors + 0.01 * rng.randn(2000, 3)
    value, gaps = mig(exact, factors)
    assert value > 0.95 and min(gaps) > 0.9
    ignored = exact.copy()
    ignored[:, 2] = rng.randn(2000)  # no code carries the third factor
    value, gaps = mig(ignored, factors)
    assert gaps[2] < 0.05 and gaps[0] > 0.9
    # two codes carrying the same factor leave no gap for it
    doubled = np.concatenate([exact, exact[:, :1]], 1)
    assert mig(doubled, factors)[1][0] < 0.05


def test_probe_accuracy_is_high_on_exact_codes_and_at_chance_on_noise():
    train_f, test_f = factor_table(600, (3, 4)), factor_table(300, (3, 4), seed=5)
    rng = np.random.RandomState(3)
    assert probe_accuracy(train_f + 0.05 * rng.randn(600, 2), train_f, test_f + 0.05 * rng.randn(300, 2),
                          test_f) > 0.95
    noise = probe_accuracy(rng.randn(600, 2), train_f, rng.randn(300, 2), test_f)
    assert noise < 0.45  # chance: (1/3 + 1/4) / 2


def test_minibatch_stratified_weights_sum_to_one_per_sample():
    algo = BetaTCVAE((1, 64, 64), {"lr": 1e-4, "weight_decay": 0.0, "batch_size": 8, "optimizer": "adam",
                                   "beta": 6.0, "latents": 3, "init": "kaiming"}, train_size=100)
    weights = algo.log_weights(8, torch.device("cpu")).exp()
    assert torch.allclose(weights.sum(1), torch.ones(8, dtype=weights.dtype))
    assert weights[0, 0] == pytest.approx(1 / 100) and weights[0, 1] == pytest.approx((100 - 7) / (100 * 7))


def test_a_vae_refuses_images_that_are_not_64x64():
    with pytest.raises(HarnessError, match="64×64"):
        BetaVAE((2, 8, 8), {"lr": 1e-4, "weight_decay": 0.0, "batch_size": 8, "optimizer": "adam", "beta": 1.0,
                            "latents": 3, "init": "kaiming"}, train_size=10)


@pytest.mark.parametrize("init, low, high", [("kaiming", 2.0, 6 ** 0.5), ("default", 0.0, 1.0)])
def test_the_vaes_start_from_the_reference_codes_initialisation(init, low, high):
    """Kaiming-uniform for ReLU (bound sqrt(6 / fan_in)), as the HFS reference code, unless asked
    for PyTorch's default (bound 1 / sqrt(fan_in))."""
    hparams = {name: hp.default for name, hp in BetaVAE.hparams.items()} | {"init": init}
    layer = BetaVAE((1, 64, 64), hparams, train_size=10).vae.encoder[-3]  # Linear(1024, 256)
    largest = layer.weight.abs().max().item() * layer.in_features ** 0.5
    assert low < largest <= high


@pytest.mark.parametrize("overrides, message", [
    (["algorithm.name=beta_vae"], "protocol disentanglement needs a dataset with factor columns"),
    (["algorithm.name=beta_vae_hfs", "dataset.name=procedural_dsprites", "dataset.options.n_train=8",
      "algorithm.hparams.hfs_pairs=46", "algorithm.hparams.batch_size=8"],
     "hfs_pairs must lie in 1..45"),
    (["algorithm.name=beta_vae", "dataset.name=procedural_dsprites", "dataset.options.n_train=8",
      "algorithm.hparams.batch_size=9"],
     r"algorithm.hparams.batch_size 9 is larger than the training split of dataset 'procedural_dsprites' \(8 examples\); "
     "accepted: at most 8"),
])
def test_bad_runs_are_refused_before_anything_is_written(tmp_path, overrides, message):
    cfg = configs.load(None, [f"output_dir={tmp_path / 'runs'}", "steps=2", "device=cpu", *overrides])
    with pytest.raises(HarnessError, match=message):
        train(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


def test_the_disentanglement_board_from_a_tiny_sweep_submits_verifies_and_draws_pictures(tmp_path, capsys):
    """The shipped board (asking for one seed) on 2-step runs of both correlation settings: two
    entries (one per training correlation), verified from the stored arrays, and a picture each."""
    import yaml
    from harness.leaderboards import board as boards

    from harness.cli import main

    definition = yaml.safe_load((boards.BOARD_DIR / "disentanglement.yaml").read_text())
    board = tmp_path / "board" / "disentanglement.yaml"
    board.parent.mkdir()
    board.write_text(yaml.safe_dump({**definition, "required_seeds": 1}))
    small = {"n_train": 24, "n_val": 8, "n_test": 24, "n_shift": 8}
    for name, correlated in (("plain", ""), ("posxy", "posX:posY")):
        spec = {"name": name, "datasets": [{"name": "procedural_dsprites", "options": {**small, "correlated": correlated}}],
                "algorithms": ["beta_vae"], "groups": ["none"], "hparam_draws": 1, "seeds": 1,
                "overrides": {"steps": 2, "eval_every": 2, "algorithm.hparams.batch_size": 8}, "launcher": "local"}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
        assert main(["sweep", str(tmp_path / f"{name}.yaml"), "--dir", str(tmp_path / name)]) == 0
        assert main(["leaderboard", "submit", str(board), str(tmp_path / name),
                     "--board-dir", str(tmp_path / "board")]) == 0
    entries = sorted((tmp_path / "board" / "entries" / "disentanglement").glob("*.json"))
    assert [p.name for p in entries] == ["beta_vae--posX-posY.json", "beta_vae.json"]
    assert main(["leaderboard", "verify", str(board), "--board-dir", str(tmp_path / "board")]) == 0
    table = (tmp_path / "board" / "disentanglement.md").read_text()
    assert "DCI disentanglement" in table and "posX:posY" in table
    assert main(["leaderboard", "pictures", str(board), "--board-dir", str(tmp_path / "board")]) == 0
    pictures = sorted((tmp_path / "board" / "pictures" / "disentanglement").glob("*.png"))
    assert [p.name for p in pictures] == ["beta_vae--posX-posY--procedural_dsprites.png",
                                          "beta_vae--procedural_dsprites.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pictures)
    # the entries carry their compact predictions (codes at the chosen checkpoints, the loss
    # terms at every one): with the runs gone they verify from those alone
    for name in ("plain", "posxy"):
        (tmp_path / name).rename(tmp_path / f"{name}-gone")
    capsys.readouterr()
    assert main(["leaderboard", "verify", str(board), "--board-dir", str(tmp_path / "board")]) == 0
    assert "(2 from the shipped ones)" in capsys.readouterr().out
    assert boards.load_board("disentanglement").selection == "val-loss"


def test_the_shipped_board_asks_its_one_question_with_five_seeds_and_pictures():
    """The committed entries: β-VAE and β-VAE + HFS under posX–posY correlation, 5 seeds each, from
    experiments/disentanglement_board_posxy.yaml (tests/test_shipped_boards.py verifies their
    numbers from the predictions they ship), each with its picture."""
    from harness.leaderboards import board as boards

    board = boards.load_board("disentanglement")
    entries = boards.load_entries(board)
    assert {(e["entrant"]["algorithm"], e["entrant"]["dataset.options.correlated"]) for e in entries} == {
        ("beta_vae", "posX:posY"), ("beta_vae_hfs", "posX:posY")}
    for entry in entries:
        assert entry["protocol"] == "disentanglement" and entry["provenance"]["seeds"] == [0, 1, 2, 3, 4]
        assert entry["provenance"]["sweep"].endswith("disentanglement_board_posxy")
        name = f"{boards.entry_path(board, entry).stem}--procedural_dsprites.png"
        assert (board.dir / "pictures" / board.name / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pytorch_s_init_hashes_as_the_runs_made_before_the_init_hparam():
    """``init`` came after runs were made without it (PyTorch's init): a config asking for that
    initialisation keeps their hash, so their folders and board entries stay planned; Kaiming's
    is another run."""
    cfg = configs.resolve({"algorithm": {"name": "beta_vae", "hparams": {"init": "default"}},
                   "dataset": {"name": "procedural_dsprites"}})
    before = copy.deepcopy(cfg)
    del before["algorithm"]["hparams"]["init"]
    kaiming = copy.deepcopy(cfg)
    kaiming["algorithm"]["hparams"]["init"] = "kaiming"
    assert configs.config_hash(cfg) == configs.config_hash(before) != configs.config_hash(kaiming)



def test_the_paper_scale_spec_crosses_the_reference_grids():
    """experiments/disentanglement_paper.yaml, for a GPU cluster: β-VAE at every β of the
    reference grid and β-VAE + HFS at every (β, γ), 10 seeds, the reference's steps and lr."""
    from pathlib import Path

    from harness.sweeps.sweep import load_spec

    spec = load_spec(Path(__file__).resolve().parent.parent / "experiments" / "disentanglement_paper.yaml")
    grid = {(arm.algorithm, arm.overrides.get("algorithm.hparams.gamma"), arm.point["algorithm.hparams.beta"])
            for arm in spec.arms}
    betas, gammas = (1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 16.0), (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
    assert grid == {("beta_vae", None, b) for b in betas} | {("beta_vae_hfs", g, b) for g in gammas for b in betas}
    assert len(spec.arms) == 49 and spec.seeds == list(range(10))
    assert spec.overrides["steps"] == 300_000 and spec.overrides["algorithm.hparams.lr"] == 1e-4
    assert spec.datasets[0]["options"]["n_test"] == 15_000  # DCI: 10,000 points to fit, 5,000 to score
