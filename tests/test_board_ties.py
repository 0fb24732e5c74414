"""Tie groups and verification levels in a board's table."""
import pytest
from scipy import stats

from harness.core.errors import HarnessError
from harness.leaderboards import levels, ties
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
