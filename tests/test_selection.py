"""Selection rules on a hand-made frame, and the aggregation over seeds."""
import math

import numpy as np
import pandas as pd
import pytest

from harness.core.errors import HarnessError
from harness.protocols.base import Rule, protocol
from harness.protocols.selection import choose, select
from harness.reports.collect import aggregate, bootstrap_interval

NAN = float("nan")


def frame():
    """Algorithm ``a`` on annotated groups: draws 0 and 1, seeds 0 and 1, checkpoints 10 and 20;
    and ``a`` on inferred groups (one draw, two seeds) for the inferred rule. Every rule has its
    own metric column, filled so that each picks a different (draw, checkpoint)."""
    rows = []

    def add(groups, draw, seed, step, **metrics):
        row = {"run": f"{groups}-{draw}-{seed}", "algorithm": "a", "dataset": "d", "groups": groups, "arm": "",
               "hparams_seed": draw, "seed": seed, "step": step, "hparams": "{}",
               "val.worst_group_acc": NAN, "val.source_worst_group_acc": NAN, "val.worst_class_acc": NAN,
               "val.avg_acc": NAN, "test.worst_group_acc": NAN, "test.avg_acc": NAN}
        row.update({k.replace("__", "."): v for k, v in metrics.items()})
        rows.append(row)

    # val-wga: per seed the best draw differs (seed 0: draw 0, seed 1: draw 1) but draw 1 has the
    # better mean (0.75 vs 0.5): both seeds must get draw 1, at checkpoint 20 (seed 0) and 10 (seed 1).
    # val-avg: draw 0 at the last checkpoint. val-worst-class: a tie, so the earliest checkpoint
    # and the lowest draw. oracle: draw 1 at checkpoint 10.
    table = {
        # (draw, seed, step): val wga, val avg, val worst-class, test wga
        (0, 0, 10): (0.9, 0.1, 0.5, 0.10), (0, 0, 20): (0.2, 0.9, 0.5, 0.20),
        (0, 1, 10): (0.1, 0.1, 0.5, 0.30), (0, 1, 20): (0.0, 0.8, 0.5, 0.40),
        (1, 0, 10): (0.6, 0.2, 0.5, 0.95), (1, 0, 20): (0.8, 0.3, 0.5, 0.50),
        (1, 1, 10): (0.7, 0.2, 0.5, 0.90), (1, 1, 20): (0.7, 0.3, 0.5, 0.60),
    }
    for (draw, seed, step), (wga, avg, wc, test) in table.items():
        add("annotated", draw, seed, step, val__worst_group_acc=wga, val__avg_acc=avg, val__worst_class_acc=wc,
            test__worst_group_acc=test, test__avg_acc=test / 2)
    for seed in (0, 1):
        add("inferred:x", 0, seed, 10, val__source_worst_group_acc=0.3, val__worst_group_acc=0.4,
            test__worst_group_acc=0.7 + seed / 10, test__avg_acc=0.8)
        add("inferred:x", 0, seed, 20, val__source_worst_group_acc=0.6, val__worst_group_acc=0.2,
            test__worst_group_acc=0.2, test__avg_acc=0.8)
    return pd.DataFrame(rows)


WORST_GROUP = protocol("worst_group")
KEYS = ["algorithm", "dataset", "groups", "arm"]


def pick(rule):
    return choose(frame(), WORST_GROUP.rule(rule), KEYS)


def picked(rule, groups="annotated"):
    c = pick(rule)
    c = c[c["groups"] == groups]
    return [(int(d), int(s), int(t)) for d, s, t in zip(c["hparams_seed"], c["seed"], c["step"])]


def test_val_wga_picks_one_draw_for_all_seeds_by_its_mean_then_each_runs_checkpoint():
    assert picked("val-wga") == [(1, 0, 20), (1, 1, 10)]


def test_val_avg_picks_its_own_draw_and_checkpoints():
    assert picked("val-avg") == [(0, 0, 20), (0, 1, 20)]


def test_ties_go_to_the_earliest_checkpoint_and_the_lowest_draw():
    assert picked("val-worst-class") == [(0, 0, 10), (0, 1, 10)]


def test_oracle_selects_on_test():
    assert picked("oracle") == [(1, 0, 10), (1, 1, 10)]


def test_val_wga_inferred_uses_discovered_groups_and_skips_runs_without_them():
    chosen = pick("val-wga-inferred")
    assert set(chosen["groups"]) == {"inferred:x"}  # annotated runs have no discovered groups
    assert picked("val-wga-inferred", "inferred:x") == [(0, 0, 20), (0, 1, 20)]
    # the same runs selected on annotated validation groups pick the other checkpoint
    assert picked("val-wga", "inferred:x") == [(0, 0, 10), (0, 1, 10)]


def test_unknown_rule_names_the_accepted_ones():
    with pytest.raises(HarnessError, match="unknown selection rule of protocol worst_group 'best'; accepted: oracle, "
                                           "val-wga"):
        WORST_GROUP.rule("best")
    assert len(WORST_GROUP.rules) == 5


def test_a_rule_that_minimises_picks_the_lowest_value():
    lowest = Rule("val-loss", "val", "avg_acc", higher_is_better=False)
    c = choose(frame(), lowest, KEYS)
    c = c[c["groups"] == "annotated"]
    # val avg over draws: draw 0 means (0.1, 0.1) at step 10 -> 0.1, draw 1 (0.2, 0.2) -> 0.2: draw 0, step 10
    assert [(int(d), int(s), int(t)) for d, s, t in zip(c["hparams_seed"], c["seed"], c["step"])] == [
        (0, 0, 10), (0, 1, 10)]


def test_a_last_checkpoint_rule_keeps_each_runs_last_checkpoint_and_picks_the_draw_by_its_metric():
    final = Rule("final", "val", "avg_acc", higher_is_better=False, last_checkpoint=True)
    c = choose(frame(), final, KEYS)
    c = c[c["groups"] == "annotated"]
    # val avg at step 20: draw 0 (0.9, 0.8) -> 0.85, draw 1 (0.3, 0.3) -> 0.3: the lowest is draw 1,
    # although draw 0 has the lowest value at step 10 (the best-checkpoint rule's pick)
    assert [(int(d), int(s), int(t)) for d, s, t in zip(c["hparams_seed"], c["seed"], c["step"])] == [
        (1, 0, 20), (1, 1, 20)]
    rows = [{"step": 10, "metrics": {"val": {"loss": 1.0}}}, {"step": 20, "metrics": {"val": {"loss": 5.0}}},
            {"step": 30, "metrics": {"test": {"dci_d": 0.5}}}]
    assert select(rows, protocol("disentanglement").rule("final"))["step"] == 20
    assert select(rows, protocol("disentanglement").rule("val-loss"))["step"] == 10


def test_aggregate_reports_mean_stderr_and_bootstrap_interval_over_seeds():
    chosen = pick("val-wga")
    chosen = chosen[chosen["groups"] == "annotated"]
    row = aggregate(chosen, KEYS, ["test.worst_group_acc"]).iloc[0]
    values = np.array([0.50, 0.90])  # test WGA at (draw 1, seed 0, step 20) and (draw 1, seed 1, step 10)
    assert row["test.worst_group_acc"] == pytest.approx(values.mean())
    assert row["test.worst_group_acc.se"] == pytest.approx(values.std(ddof=1) / math.sqrt(2))
    assert (row["n_seeds"], row["hparams_seed"], row["seeds"], row["steps"]) == (2, 1, "0 1", "20 10")
    assert 0.5 <= row["test.worst_group_acc.ci_low"] <= row["test.worst_group_acc.ci_high"] <= 0.9


def test_bootstrap_interval_is_reproducible_and_undefined_for_one_seed():
    values = np.array([0.61, 0.55, 0.70, 0.64, 0.58])
    low, high = bootstrap_interval(values)
    assert bootstrap_interval(values) == (low, high)
    assert values.min() < low < values.mean() < high < values.max()
    assert all(math.isnan(v) for v in bootstrap_interval(np.array([0.5])))
    assert bootstrap_interval(np.array([0.4, 0.4, 0.4])) == (0.4, 0.4)
