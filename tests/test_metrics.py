import numpy as np
import pytest

from harness.protocols.classification import (
    classification_metrics,
    overlapping_worst_group_acc,
    weighted_average,
)
from harness.reports.collect import mean_and_stderr


def one_hot(pred, num_classes=2):
    return np.eye(num_classes)[pred]


def test_metrics_on_hand_made_predictions_with_an_empty_group():
    y = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([0, 0, 1, 1, 0, 0])
    groups = np.array([0, 0, 1, 2, 2, 2])  # group 3 is empty
    m = classification_metrics(y, one_hot(pred), groups, num_groups=4, num_classes=2)
    assert m["avg_acc"] == pytest.approx(3 / 6)
    assert m["group_acc"] == [1.0, 0.0, pytest.approx(1 / 3), None]
    assert m["group_n"] == [2, 1, 3, 0]
    assert m["worst_group_acc"] == 0.0
    assert m["class_acc"] == [pytest.approx(2 / 3), pytest.approx(1 / 3)]
    assert m["worst_class_acc"] == pytest.approx(1 / 3)
    assert m["balanced_acc"] == pytest.approx(0.5)


def test_loss_is_mean_cross_entropy_of_the_true_class():
    probs = np.array([[0.8, 0.2], [0.4, 0.6]])
    m = classification_metrics(np.array([0, 0]), probs, None, 0, 2)
    assert m["loss"] == pytest.approx(-(np.log(0.8) + np.log(0.4)) / 2)
    assert "worst_group_acc" not in m


def test_unknown_groups_count_in_the_average_but_in_no_group():
    y = np.array([0, 1, 1])
    m = classification_metrics(y, one_hot(np.array([0, 0, 1])), np.array([0, -1, 1]), 2, 2)
    assert m["avg_acc"] == pytest.approx(2 / 3)
    assert m["group_acc"] == [1.0, 1.0]


def test_adjusted_average_weights_groups_and_skips_empty_ones():
    assert weighted_average([1.0, 0.0, None], [3, 1, 5]) == pytest.approx(0.75)
    y = np.array([0, 1])
    m = classification_metrics(y, one_hot(np.array([0, 0])), np.array([0, 1]), 2, 2, group_weights=[3, 1])
    assert m["adjusted_avg_acc"] == pytest.approx(0.75)


def test_mean_and_standard_error():
    mean, se = mean_and_stderr([1.0, 2.0, 3.0])
    assert mean == 2.0 and se == pytest.approx(1 / np.sqrt(3))
    assert mean_and_stderr([0.5]) == (0.5, 0.0)


def test_overlapping_groups_take_the_worst_member_label_pair():
    y = np.array([0, 1, 1, 0])
    pred = np.array([0, 0, 1, 1])
    members = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])  # example 1 mentions both attributes
    # attribute 0: (y=0: 1/1), (y=1: 0/1); attribute 1: (y=1: 1/2), (y=0 empty)
    assert overlapping_worst_group_acc(y, pred, members) == 0.0
    assert overlapping_worst_group_acc(y, pred, members[:, 1:]) == 0.5
