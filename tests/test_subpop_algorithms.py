"""What makes each of SubpopBench's further methods that method, on hand-made tensors."""
import math

import pytest
import torch
from harness.algorithms.cvar_dro import cvar
from harness.algorithms.lff import generalized_cross_entropy
from torch import nn

from harness.core.errors import HarnessError
from harness.core.registry import ALGORITHMS
from harness.models.algorithm import Batch
from harness.models.backbones import Backbone
from harness.models.shared import effective_number_weights


def make(name, num_groups=4, train_size=4, **hp):
    """The algorithm on 2-d inputs with an identity backbone; with identity_head its logits are x."""
    entry = ALGORITHMS.get(name)
    identity_head = hp.pop("identity_head", False)
    hparams = {k: v.default for k, v in entry.hparams.items()} | hp
    torch.manual_seed(0)
    algo = entry.obj(lambda: Backbone(nn.Flatten(), n_outputs=2), 2, num_groups, hparams, train_size)
    if identity_head:
        with torch.no_grad():
            algo.classifier.weight.copy_(torch.eye(2))
            algo.classifier.bias.zero_()
    return algo


def batch(x, y, g=None, index=None):
    x, y = torch.tensor(x, dtype=torch.float), torch.tensor(y)
    g = torch.full_like(y, -1) if g is None else torch.tensor(g)
    return Batch(x, y, g, torch.arange(len(y)) if index is None else torch.tensor(index))


def ce(logits, y):
    return -math.log(math.exp(logits[y]) / sum(math.exp(v) for v in logits))


# CVaR-DRO ---------------------------------------------------------------------------------------

def test_cvar_is_the_mean_of_the_worst_alpha_fraction_with_a_fractional_last_example():
    losses = torch.tensor([3.0, 1.0, 5.0, 2.0, 4.0])
    assert float(cvar(losses, 0.3)) == pytest.approx((5 + 0.5 * 4) / 1.5)  # k = 1.5 examples
    assert float(cvar(losses, 0.4)) == pytest.approx(4.5)
    assert float(cvar(losses, 1.0)) == pytest.approx(3.0)
    assert float(cvar(losses, 0.05)) == pytest.approx(5.0)  # below one example: the largest loss


def test_cvar_dro_trains_on_the_worst_examples_only():
    algo = make("cvar_dro", alpha=0.5, lr=0.0, identity_head=True)
    b = batch([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.0]], [0, 0, 0, 1])
    logs = algo.update(b, 0)
    losses = sorted((ce(x, y) for x, y in zip(b.x.tolist(), b.y.tolist())), reverse=True)
    assert float(logs["loss"]) == pytest.approx((losses[0] + losses[1]) / 2, rel=1e-5)
    algo.optimizer.zero_grad()
    cvar(nn.functional.cross_entropy(algo.predict(b.x), b.y, reduction="none"), 0.5).backward()
    cvar_grad = algo.classifier.weight.grad.clone()
    algo.optimizer.zero_grad()
    nn.functional.cross_entropy(algo.predict(b.x[[2, 3]]), b.y[[2, 3]]).backward()  # the two worst
    assert torch.allclose(cvar_grad, algo.classifier.weight.grad, atol=1e-6)


# Imbalance losses --------------------------------------------------------------------------------

def test_focal_loss_scales_cross_entropy_by_one_minus_p_to_the_gamma():
    algo = make("focal", gamma=2.0, lr=0.0, identity_head=True)
    logs = algo.update(batch([[0.0, math.log(3)], [0.0, math.log(3)]], [1, 0]), 0)  # p(1) = 0.75
    expected = (0.25 ** 2 * -math.log(0.75) + 0.75 ** 2 * -math.log(0.25)) / 2
    assert float(logs["loss"]) == pytest.approx(expected, rel=1e-5)


def test_effective_number_weights():
    w = effective_number_weights(torch.tensor([3.0, 1.0, 0.0]), 0.5)  # (1-β)/(1-β^n): 4/7 and 1
    assert w.tolist() == pytest.approx([2 * (4 / 7) / (11 / 7), 2 / (11 / 7), 0.0])
    assert effective_number_weights(torch.tensor([5.0, 1.0]), 1 - 1e-9).tolist() == pytest.approx(
        [2 / 6, 10 / 6], rel=1e-4)  # β → 1: inverse class frequency


def test_class_balanced_loss_weighs_classes_by_their_effective_number():
    algo = make("cb_loss", beta=0.5, lr=0.0, identity_head=True)
    algo.sampling(torch.tensor([0, 0, 0, 1]), torch.full((4,), -1))
    logs = algo.update(batch([[1.0, 0.0], [1.0, 0.0]], [0, 1]), 0)
    w0, w1 = 2 * (4 / 7) / (11 / 7), 2 / (11 / 7)
    assert float(logs["loss"]) == pytest.approx((w0 * ce([1, 0], 0) + w1 * ce([1, 0], 1)) / 2, rel=1e-5)


def test_ldam_margins_shrink_as_the_fourth_root_of_class_size():
    algo = make("ldam", max_m=0.5, scale=10.0, lr=0.0, identity_head=True, train_size=17)
    algo.sampling(torch.tensor([0] * 16 + [1]), torch.full((17,), -1))
    assert algo.margins().tolist() == pytest.approx([0.25, 0.5])  # 16^-1/4 = 1/2, scaled to max 0.5
    logs = algo.update(batch([[0.0, 0.0], [0.0, 0.0]], [0, 1]), 0)
    assert float(logs["loss"]) == pytest.approx((ce([-2.5, 0.0], 0) + ce([0.0, -5.0], 1)) / 2, rel=1e-5)


def test_ldam_defers_reweighting_until_drw_step():
    algo = make("ldam", max_m=0.5, scale=10.0, lr=0.0, identity_head=True, train_size=17, drw_step=3)
    algo.sampling(torch.tensor([0] * 16 + [1]), torch.full((17,), -1))
    b = batch([[0.0, 0.0], [0.0, 0.0]], [0, 1])
    before, after = float(algo.update(b, 2)["loss"]), float(algo.update(b, 3)["loss"])
    l0, l1 = ce([-2.5, 0.0], 0), ce([0.0, -5.0], 1)
    w0, w1 = effective_number_weights(torch.tensor([16.0, 1.0]), 0.9999).tolist()
    assert before == pytest.approx((l0 + l1) / 2, rel=1e-5)
    assert after == pytest.approx((w0 * l0 + w1 * l1) / (w0 + w1), rel=1e-5)


def test_balanced_softmax_trains_on_logits_plus_log_prior_and_predicts_without_it():
    algo = make("balanced_softmax", lr=0.0, identity_head=True)
    algo.sampling(torch.tensor([0, 0, 0, 1]), torch.full((4,), -1))
    logs = algo.update(batch([[0.0, 0.0], [0.0, 0.0]], [0, 1]), 0)
    assert float(logs["loss"]) == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2, rel=1e-5)
    assert algo.predict(torch.zeros(1, 2)).tolist() == [[0.0, 0.0]]


# LfF ---------------------------------------------------------------------------------------------

def test_generalized_cross_entropy_has_p_to_the_q_times_the_gradient_of_cross_entropy():
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5]], requires_grad=True)
    y = torch.tensor([1, 0])
    p = logits.softmax(1)[[0, 1], y].detach()
    gce = generalized_cross_entropy(logits, y, 0.7)
    assert gce.tolist() == pytest.approx(((1 - p ** 0.7) / 0.7).tolist())
    (gce_grad,) = torch.autograd.grad(gce.sum(), logits)
    (ce_grad,) = torch.autograd.grad(nn.functional.cross_entropy(logits, y, reduction="none").sum(), logits)
    assert torch.allclose(gce_grad, p.unsqueeze(1) ** 0.7 * ce_grad)


def test_generalized_cross_entropy_keeps_a_finite_gradient_when_the_label_is_confidently_wrong():
    # p_y = softmax(...)[0] underflows to 0 in float32: p_y ** q would give an infinite gradient (NaN)
    logits = torch.tensor([[0.0, 200.0], [3.0, 0.0]], requires_grad=True)
    gce = generalized_cross_entropy(logits, torch.tensor([0, 0]), 0.7)
    gce.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0].abs().max() < 1e-3 < logits.grad[1].abs().max()
    assert gce[0].item() == pytest.approx(1 / 0.7)


def test_lff_weighs_examples_by_relative_difficulty_of_class_normalised_loss_averages():
    algo = make("lff", train_size=4)
    algo.sampling(torch.tensor([0, 0, 1, 1]), torch.full((4,), -1))
    index, y = torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1])
    first = algo.relative_difficulty(index, y, torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]))
    # class 0: biased maxima 2, debiased 1; class 1: 3 and 1
    assert first.tolist() == pytest.approx([0.5 / 1.5, 1 / 2, 1 / 2], rel=1e-6)
    second = algo.relative_difficulty(torch.tensor([0]), torch.tensor([0]), torch.tensor([[3.0], [0.0]]))
    b, d = 0.7 * 1 + 0.3 * 3, 0.7 * 1 + 0.3 * 0  # averages 1.6 and 0.7; class maxima 2 and 1
    assert second.tolist() == pytest.approx([(b / 2) / (b / 2 + d / 1)], rel=1e-6)


def test_lff_predicts_with_the_debiased_model_and_trains_both():
    algo = make("lff", lr=1e-2)
    algo.sampling(torch.tensor([0, 1, 0, 1]), torch.full((4,), -1))
    biased = [p.detach().clone() for p in algo.biased.parameters()]
    debiased = algo.classifier.weight.detach().clone()
    algo.update(batch([[1.0, 0.0], [0.0, 1.0]], [1, 0]), 0)
    assert not torch.equal(debiased, algo.classifier.weight)
    assert not all(torch.equal(a, b) for a, b in zip(biased, algo.biased.parameters()))
    x = torch.randn(3, 2)
    assert torch.equal(algo.predict(x), algo.classifier(algo.featurizer(x)))


# IRM and V-REx -----------------------------------------------------------------------------------

def irm_env_gradient(rows):
    """d/dw mean CE(w z, y) at w = 1 is mean(sum_k p_k z_k - z_y)."""
    grads = []
    for z, y in rows:
        p = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
        grads.append(sum(pk * zk for pk, zk in zip(p, z)) - z[y])
    return sum(grads) / len(grads)


def test_irm_penalty_is_the_mean_squared_gradient_of_each_environments_risk_at_scale_one():
    algo = make("irm", num_groups=3)
    logits = torch.tensor([[1.0, -1.0], [0.5, 2.0], [3.0, 0.0], [-1.0, 1.0], [0.2, 0.1]])
    y, g = torch.tensor([0, 0, 1, 1, 0]), torch.tensor([0, 0, 2, 2, -1])
    risk, penalty = (t.detach() for t in algo.objective(logits, y, g))
    rows = list(zip(logits.tolist(), y.tolist()))
    g0, g2 = irm_env_gradient(rows[:2]), irm_env_gradient(rows[2:4])
    assert float(penalty) == pytest.approx((g0 ** 2 + g2 ** 2) / 2, rel=1e-5)
    r0, r2 = (ce(*rows[0]) + ce(*rows[1])) / 2, (ce(*rows[2]) + ce(*rows[3])) / 2
    assert float(risk) == pytest.approx((r0 + r2) / 2, rel=1e-5)


def test_vrex_penalty_is_the_variance_of_environment_risks():
    algo = make("vrex", num_groups=3)
    logits = torch.tensor([[1.0, -1.0], [0.5, 2.0], [3.0, 0.0]])
    y, g = torch.tensor([0, 0, 1]), torch.tensor([1, 1, 0])
    risk, penalty = (t.detach() for t in algo.objective(logits, y, g))
    r1 = (ce([1.0, -1.0], 0) + ce([0.5, 2.0], 0)) / 2
    r0 = ce([3.0, 0.0], 1)
    assert float(risk) == pytest.approx((r0 + r1) / 2, rel=1e-5)
    assert float(penalty) == pytest.approx(((r0 - r1) / 2) ** 2, rel=1e-5)


@pytest.mark.parametrize("name", ["irm", "vrex"])
def test_penalty_weight_is_one_until_anneal_steps_then_lambda_with_a_fresh_optimizer(name):
    algo = make(name, num_groups=2, penalty_weight=50.0, anneal_steps=2, lr=0.0)
    b = batch([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], [0, 0, 1], g=[0, 1, 1])
    before = algo.update(b, 1)
    optimizer = algo.optimizer
    after = algo.update(b, 2)
    assert float(before["loss"]) == pytest.approx(float(before["risk"] + before["penalty"]), rel=1e-5)
    assert float(after["loss"]) == pytest.approx(float(after["risk"] + 50 * after["penalty"]), rel=1e-5)
    assert algo.optimizer is not optimizer
    algo.update(b, 3)
    assert algo.optimizer is not optimizer


# CORAL and MMD ------------------------------------------------------------------------------------

def test_coral_matches_means_and_covariances():
    algo = make("coral")
    a, b = torch.tensor([[0.0, 0.0], [2.0, 2.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    # means (1, 1) vs (0, 1); covariances [[2, 2], [2, 2]] vs [[0, 0], [0, 2]]
    assert float(algo.discrepancy(a, b)) == pytest.approx(0.5 + 3.0)
    features = torch.cat([a, b, torch.tensor([[9.0, 9.0]])])
    g = torch.tensor([0, 0, 3, 3, 1])  # group 1 has one example: left out
    assert float(algo.penalty(features, g, torch.zeros(5, dtype=torch.long))) == pytest.approx(3.5)


def test_mmd_is_the_gaussian_kernel_discrepancy_summed_over_bandwidths():
    algo = make("mmd")
    a, b = torch.tensor([[0.0], [0.0]]), torch.tensor([[1.0], [1.0]])
    cross = sum(math.exp(-gamma) for gamma in algo.bandwidths)
    assert float(algo.discrepancy(a, b)) == pytest.approx(2 * 7 - 2 * cross, rel=1e-5)
    assert float(algo.discrepancy(a, a)) == pytest.approx(0.0, abs=1e-5)
    # unbiased: groups whose points are all far apart score 0, where the biased estimate (with each
    # point's kernel to itself) scores 7/2 + 7/2 and so pays the features to collapse
    spread, other = torch.tensor([[0.0], [1000.0]]), torch.tensor([[2000.0], [3000.0]])
    assert float(algo.discrepancy(spread, other)) == pytest.approx(0.0, abs=1e-6)


def test_feature_matching_penalty_averages_over_environment_pairs():
    algo = make("coral")
    f = torch.tensor([[0.0, 0.0], [2.0, 2.0], [0.0, 0.0], [0.0, 2.0], [0.0, 0.0], [2.0, 2.0]])
    g = torch.tensor([0, 0, 1, 1, 2, 2])  # envs 0 and 2 are identical: pairs give 3.5, 0, 3.5
    assert float(algo.penalty(f, g, torch.zeros(6, dtype=torch.long))) == pytest.approx(7.0 / 3)


def test_feature_matching_matches_only_groups_of_the_same_label():
    algo = make("coral")
    f = torch.tensor([[0.0, 0.0], [2.0, 2.0], [0.0, 0.0], [0.0, 2.0], [0.0, 0.0], [2.0, 2.0]])
    g = torch.tensor([0, 0, 1, 1, 2, 2])
    # groups 0 and 1 hold label 0, group 2 label 1: the only pair is (0, 1), discrepancy 3.5
    assert float(algo.penalty(f, g, torch.tensor([0, 0, 0, 0, 1, 1]))) == pytest.approx(3.5)
    # every group its own label (the `classes` group source): nothing to match
    assert float(algo.penalty(f, g, torch.tensor([0, 0, 1, 1, 2, 2]))) == 0.0


# Mixup and LISA ------------------------------------------------------------------------------------

def test_mixed_loss_mixes_inputs_and_labels_in_the_same_proportion():
    algo = make("mixup", identity_head=True)
    x, y = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1])
    loss = algo.mixed_loss(x, y, torch.tensor([1, 0]), torch.tensor([0.75, 0.75]))
    logp = torch.log_softmax(torch.tensor([1.5, 0.5]), 0)  # 0.75 x0 + 0.25 x1, and its mirror
    expected = -(0.75 * logp[0] + 0.25 * logp[1])
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_integer_inputs_mix_features_instead():
    entry = ALGORITHMS.get("mixup")
    hparams = {k: v.default for k, v in entry.hparams.items()}
    algo = entry.obj(lambda: Backbone(nn.Embedding(5, 2), nn.Flatten(), n_outputs=2), 2, 0, hparams, 4)
    with torch.no_grad():
        algo.featurizer[0].weight.copy_(torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [1.0, 1.0], [2.0, 2.0]]))
        algo.classifier.weight.copy_(torch.eye(2))
        algo.classifier.bias.zero_()
    tokens, y = torch.tensor([[1], [2]]), torch.tensor([0, 1])
    loss = algo.mixed_loss(tokens, y, torch.tensor([1, 0]), torch.tensor([0.5, 0.5]))
    assert float(loss.detach()) == pytest.approx(math.log(2), rel=1e-5)  # features (2, 2): a uniform prediction


def test_mixup_update_mixes_with_one_beta_draw_per_batch(monkeypatch):
    algo = make("mixup", alpha=0.4, lr=0.0)
    seen = {}

    def spy(x, y, partner, lam):
        seen.update(partner=partner, lam=lam)
        return torch.tensor(0.0, requires_grad=True)

    monkeypatch.setattr(algo, "mixed_loss", spy)
    algo.update(batch([[0.0, 0.0]] * 6, [0, 1, 0, 1, 0, 1]), 0)
    assert sorted(seen["partner"].tolist()) == list(range(6))
    assert torch.all(seen["lam"] == seen["lam"][0]) and 0 < float(seen["lam"][0]) < 1


def test_lisa_partners_share_the_label_across_domains_or_the_domain_across_labels():
    algo = make("lisa", num_groups=4)  # 2 classes x 2 domains: g = 2 y + domain
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    g = torch.tensor([0, 0, 1, 2, 3, 3, -1])
    domain = g % 2
    for seed in range(20):
        torch.manual_seed(seed)
        within = algo.partners(y, g, intra_label=True)
        across = algo.partners(y, g, intra_label=False)
        for i in range(6):
            assert y[within[i]] == y[i] and domain[within[i]] != domain[i]
            assert domain[across[i]] == domain[i] and y[across[i]] != y[i]
        assert within[6] == 6 and across[6] == 6  # no group: unmixed


def test_lisa_picks_intra_label_batches_with_probability_p_sel():
    algo = make("lisa", num_groups=4, p_sel=0.2, lr=0.0)
    b = batch([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0, 0, 1, 1], g=[0, 1, 2, 3])
    share = sum(float(algo.update(b, s)["intra_label"]) for s in range(500)) / 500
    assert share == pytest.approx(0.2, abs=0.05)


def test_lisa_needs_two_domains_per_class_numbered_label_times_domains_plus_domain():
    with pytest.raises(HarnessError, match="two domains or more"):
        make("lisa", num_groups=2)  # groups=classes: one domain per class
    algo = make("lisa", num_groups=4)
    with pytest.raises(HarnessError, match="label \\* domains \\+ domain"):
        algo.sampling(torch.tensor([0, 1]), torch.tensor([2, 0]))


# CRT and ReWeight-CRT ---------------------------------------------------------------------------

def params(module):
    return [p.detach().clone() for p in module.parameters()]


def same(a, module):
    return all(torch.equal(u, v) for u, v in zip(a, module.parameters()))


@pytest.mark.parametrize("name", ["crt", "reweight_crt"])
def test_crt_trains_everything_then_reinitialises_and_retrains_only_the_head(name):
    algo = make(name, erm_steps=2, lr=1e-2)
    algo.sampling(torch.tensor([0, 0, 0, 1]), torch.full((4,), -1))
    b = batch([[1.0, 0.0], [0.5, 0.2], [0.0, 1.0], [1.0, 1.0]] * 8, [0, 0, 0, 1] * 8)
    algo.featurizer = Backbone(nn.Linear(2, 2), n_outputs=2)  # a backbone with weights to freeze
    algo.optimizer = algo.make_optimizer(algo.parameters())
    before = params(algo.featurizer)
    algo.update(b, 0)
    assert not same(before, algo.featurizer)
    features, head = params(algo.featurizer), params(algo.classifier)
    torch.manual_seed(5)
    algo.update(b, 2)  # re-initialised, then one head step
    assert same(features, algo.featurizer)
    assert not same(head, algo.classifier)
    torch.manual_seed(5)
    fresh = nn.Linear(2, 2)
    assert not torch.allclose(fresh.weight, algo.classifier.weight)  # it moved from the re-initialisation
    assert torch.allclose(fresh.weight, algo.classifier.weight, atol=0.05)
    head = params(algo.classifier)
    algo.update(b, 3)
    assert same(features, algo.featurizer) and not same(head, algo.classifier)


def test_crt_draws_a_mixture_and_splits_it_into_exact_uniform_and_class_balanced_draws():
    algo = make("crt")
    y = torch.tensor([0, 0, 0, 1])
    _, weights = algo.sampling(y, torch.full((4,), -1))
    uniform, balanced = torch.full((4,), 0.25), torch.tensor([1 / 6, 1 / 6, 1 / 6, 1 / 2])
    assert weights.tolist() == pytest.approx(((uniform + balanced) / 2).tolist())
    torch.manual_seed(0)
    many = y.repeat(20000)
    first = algo.stage_examples(many, first_stage=True).view(-1, 4).float().mean(0)
    # drawn with weight (u + b) / 2 and kept with u / (u + b): kept in proportion to u
    assert first.tolist() == pytest.approx((uniform / (uniform + balanced)).tolist(), abs=0.01)
    torch.manual_seed(0)
    second = algo.stage_examples(many, first_stage=False).view(-1, 4).float().mean(0)
    assert (first + second).tolist() == pytest.approx([1.0] * 4)


def test_reweight_crt_weighs_the_head_loss_by_inverse_class_frequency():
    algo = make("reweight_crt")
    algo.sampling(torch.tensor([0, 0, 0, 1]), torch.full((4,), -1))
    logits, y = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1])
    expected = ((4 / 6) * ce([1, 0], 0) + 2 * ce([1, 0], 1)) / 2
    assert float(algo.head_loss(logits, y)) == pytest.approx(expected, rel=1e-5)


def test_crt_refuses_a_run_too_short_for_its_second_stage():
    with pytest.raises(HarnessError, match="erm_steps \\(500\\) must be below steps \\(300\\)"):
        ALGORITHMS.get("crt").obj.check_run({"erm_steps": 500}, 300)


def test_which_new_algorithms_need_groups():
    names = ["cvar_dro", "lff", "irm", "vrex", "mixup", "lisa", "coral", "mmd", "focal", "ldam", "cb_loss",
             "balanced_softmax", "crt", "reweight_crt"]
    assert {n for n in names if ALGORITHMS.get(n).obj.needs_groups} == {"irm", "vrex", "lisa", "coral", "mmd"}
