"""Tie groups and verification levels in a board's table."""
import json
import shutil

import numpy as np
import pytest
from scipy import stats

from harness.core.errors import HarnessError
from harness.leaderboards import board as boards
from harness.leaderboards import levels, ties
from harness.protocols.classification import classification_metrics
from harness.leaderboards.ties import Score


def test_welch_separates_what_the_spread_allows():
    assert ties.differ(Score(0.80, 0.01, 3), Score(0.70, 0.01, 3))
    assert not ties.differ(Score(0.645, 0.009, 3), Score(0.629, 0.008, 3))  # rwg vs group_dro on worst_group
    assert not ties.differ(Score(0.5, 0.0, 3), Score(0.5, 0.0, 3)) and ties.differ(Score(0.5, 0.0, 3), Score(0.4, 0.0, 3))


def test_the_test_is_welchs_on_the_per_seed_numbers():
    a, b = [0.61, 0.64, 0.66, 0.70], [0.55, 0.58, 0.60]
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    score = lambda v: Score(sum(v) / len(v), stats.sem(v), len(v))  # noqa: E731
    assert ties.differ(score(a), score(b), level=p * 1.01) and not ties.differ(score(a), score(b), level=p * 0.99)


def test_the_detectable_effect_is_the_one_found_at_the_stated_power():
    """Simulated per-seed numbers with a true difference equal to the computed minimum detectable
    effect: Welch's test finds it in about 80% of draws; with half of it, far less often."""
    rng = np.random.default_rng(0)
    sd, n = 0.01, 5
    mde = ties.welch(Score(0.0, sd / n ** 0.5, n), Score(0.0, sd / n ** 0.5, n)).detectable(power=0.8)

    def found(effect):
        a, b = rng.normal(effect, sd, (4000, n)), rng.normal(0.0, sd, (4000, n))
        return (stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05).mean()

    assert 0.75 < found(mde) < 0.85 and found(mde / 2) < 0.4
    w = ties.welch(Score(0.04, 0.003, 5), Score(0.02, 0.004, 5))
    assert w.difference == pytest.approx(0.02) and w.stderr == pytest.approx(0.005) and 5 < w.df < 8


def test_rank_ranges_never_join_entries_that_differ():
    # a chain of neighbours each close to the next, the ends far apart
    scores = [Score(m, 0.01, 3) for m in (0.90, 0.88, 0.86, 0.50)]
    labels = ties.rank_labels(scores)
    assert labels[-1] == "4" and labels[0] != "1–4"
    assert ties.rank_labels([Score(0.9, 0.0, 3), Score(0.8, 0.0, 3)]) == ["1", "2"]
    assert ties.rank_labels([Score(0.9, 0.05, 3), Score(0.89, 0.05, 3)]) == ["1–2", "1–2"]
    assert ties.rank_labels([Score(0.9, 0.05, 3), Score(None, None, 0)]) == ["1", "2"]


def test_levels_are_stamped_read_and_refused_when_unknown():
    assert levels.level_of({"verification": levels.stamp("claimed")})[0] == "claimed"
    assert levels.label({}) == "recomputed"
    with pytest.raises(HarnessError, match="re-run, recomputed, claimed"):
        levels.stamp("trusted")
    with pytest.raises(HarnessError, match="verification of entry"):
        levels.level_of({"verification": {"level": "sure"}})


# --- the paired bootstrap -------------------------------------------------------------------

def _examples(correct, groups=None, seeds=(0, 1, 2)):
    return ties.Examples(tuple(seeds), np.asarray(correct, dtype=bool), None if groups is None else np.asarray(groups))


def _seed_spread_case():
    """Entry a: per seed a different share of 600 examples right (50%, 70%, 90%: a wide spread
    over seeds); entry b: a's predictions, plus 18 examples more right in every seed."""
    rng = np.random.default_rng(5)
    a = np.stack([rng.random(600) < p for p in (0.5, 0.7, 0.9)])
    b = a.copy()
    for row in b:
        row[rng.choice(np.flatnonzero(~row), 18, replace=False)] = True
    return a, b


def test_the_paired_bootstrap_separates_what_welch_cannot():
    a, b = _seed_spread_case()
    per_seed = lambda c: [row.mean() for row in c]  # noqa: E731
    score = lambda c: Score(float(np.mean(per_seed(c))), float(stats.sem(per_seed(c))), 3)  # noqa: E731
    assert not ties.differ(score(b), score(a))  # 3 points apart, ~11 points of seed spread
    draws_b, draws_a = ties.paired_draws([_examples(b), _examples(a)])
    assert ties.paired_differ(draws_b, draws_a)
    # the same predictions unpaired (b's seeds in another order: seed 0 of b is seed 2 of a) do not separate
    shuffled = ties.paired_draws([_examples(b[::-1], seeds=(3, 4, 5)), _examples(a)])
    assert not ties.paired_differ(*shuffled)


def test_the_paired_bootstrap_ties_what_the_examples_cannot_tell_apart():
    a, _ = _seed_spread_case()
    rng = np.random.default_rng(6)
    b = a.copy()
    for row in b:  # as many examples newly wrong as newly right
        right, wrong = np.flatnonzero(row), np.flatnonzero(~row)
        row[rng.choice(right, 15, replace=False)] = False
        row[rng.choice(wrong, 15, replace=False)] = True
    assert not ties.paired_differ(*ties.paired_draws([_examples(a), _examples(b)]))
    same = ties.paired_draws([_examples(a), _examples(a.copy())])
    assert not ties.paired_differ(*same) and np.array_equal(same[0], same[1])


def test_the_bootstrap_is_seeded_and_its_statistic_is_the_protocols_metric():
    rng = np.random.default_rng(7)
    y, attr = rng.integers(0, 2, 300), rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.7, y, 1 - y)
    m = classification_metrics(y, np.eye(2)[pred], attr, 4, 2)
    ones = np.ones((1, 300))
    correct = pred == y
    assert ties.statistic(ones, correct, attr)[0] == pytest.approx(m["worst_group_acc"])
    assert ties.statistic(ones, correct, y)[0] == pytest.approx(m["worst_class_acc"])
    assert ties.statistic(ones, correct, None)[0] == pytest.approx(m["avg_acc"])
    entry = _examples(np.stack([correct, ~correct, correct]), attr)
    first, again = ties.paired_draws([entry]), ties.paired_draws([entry])
    assert np.array_equal(first[0], again[0]) and not np.array_equal(first[0], ties.paired_draws([entry], seed=1)[0])


def test_a_board_ranks_by_the_paired_bootstrap_and_marks_entries_without_per_example_predictions(tmp_path):
    board = boards.load_board("worst_group_smoke")
    entries = boards.load_entries(board)
    labels, method = boards.ranking(board, entries)
    assert method == ties.PAIRED_METHOD and "†" not in "".join(labels)
    folder = tmp_path / "b"
    shutil.copytree(boards.BOARD_DIR / "entries" / "worst_group_smoke", folder / "entries" / "worst_group_smoke")
    path = folder / "entries" / "worst_group_smoke" / "erm--annotated.json"
    old = json.loads(path.read_text())
    del old["predictions"]  # an entry from before compact predictions
    path.write_text(json.dumps(old))
    copy = boards.load_board("worst_group_smoke", folder)
    table = boards.render(copy, boards.load_entries(copy))
    assert "paired bootstrap" in table and "marked † ships no per-example predictions" in table
    erm_row = next(line for line in table.splitlines() if "| erm " in line)
    assert "†" in erm_row.split("|")[1]
    # a board whose entries all ship per-example correctness ranks by the bootstrap; one whose
    # metric is not per-example (disentanglement's DCI-D) keeps Welch's test, and says so
    for name, method in (("worst_group", ties.PAIRED_METHOD), ("disentanglement", ties.METHOD)):
        board = boards.load_board(name)
        assert method in boards.render(board, boards.load_entries(board))


@pytest.mark.parametrize("name", ["transfer", "transfer_best"])
def test_a_transfer_board_resamples_each_runs_probe_predictions_at_its_own_layer(name):
    """The paired bootstrap reads each chosen run's test predictions at the layer its entry names
    (per-layer board) or validation chose (best-layer board), decoded with the published labels:
    their accuracy per seed is the entry's, so the board ranks by the bootstrap."""
    board = boards.load_board(name)
    entries = boards.load_entries(board)
    for entry in entries[::7]:
        for dataset in ("fashion_classes", "digits"):
            found = boards._examples(board, entry, dataset, "test.probe_acc")
            stat = entry["results"][dataset]["metrics"]["test.probe_acc"]
            assert found is not None and found.seeds == (0, 1) and found.groups is None
            per_seed = found.correct.mean(1)
            assert per_seed.mean() == pytest.approx(stat["mean"])
            assert abs(per_seed[0] - per_seed[1]) / 2 == pytest.approx(stat["stderr"])  # s.e. of 2 seeds
    assert boards.ranking(board, entries)[1] == ties.PAIRED_METHOD
