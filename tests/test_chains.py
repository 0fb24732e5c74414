"""Chains of resumable pieces: where ``wrap_cuts`` cuts (McNaughton's rule: at most one cut per
worker but one, no worker's share above the larger of the longest and the mean), which chain
``next_chain`` advances, and that ``run_chains`` in processes gives each chain's state as a plain
loop does."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.core.chains import next_chain, run_chains, wrap_cuts
from harness.protocols.factors import STAGES


@given(st.lists(st.floats(0.5, 100), max_size=8), st.integers(1, 5))
def test_wrap_cuts_cut_few_times_and_deal_even_shares(work, workers):
    cuts = wrap_cuts(work, workers)
    assert len(cuts) == len(work)
    assert all(c[-1] == 1.0 and c == sorted(c) and 0 < c[0] for c in cuts)
    assert sum(len(c) - 1 for c in cuts) <= workers - 1
    share = max(max(work, default=0), sum(work) / workers)
    # the pieces laid end to end, most work first, fill consecutive shares: none straddles a boundary
    start = 0.0
    for c in sorted(range(len(work)), key=lambda c: -work[c]):
        for low, high in zip([0.0, *cuts[c]], cuts[c]):
            a, b, eps = start + low * work[c], start + high * work[c], 1e-6 * share
            assert (a + eps) // share == (b - eps) // share
        start += work[c]


def test_wrap_cuts_split_the_fit_that_crosses_the_even_share():
    # dSprites' trees per stage (3, 6, 40, 32, 32 classes) on two workers: the share is
    # 11300 / 2 = 5650; 40 classes fill 4000 of it and the first 32-class fit the other 1650
    assert wrap_cuts([300, 600, 4000, 3200, 3200], 2) == [[1.0], [1.0], [1.0], [1650 / 3200, 1.0], [1.0]]
    assert wrap_cuts([5, 1], 2) == [[1.0], [1.0]]  # the longest is the share: nothing to cut


def test_next_chain_is_the_most_work_left_among_the_ready():
    costs = [[1, 1], [3], [2, 2]]
    assert next_chain(costs, [0, 0, 0], []) == 2
    assert next_chain(costs, [0, 0, 1], []) == 1
    assert next_chain(costs, [0, 0, 1], [1]) == 0
    assert next_chain(costs, [2, 1, 2], []) is None


def append(state: tuple | None, piece: str) -> tuple:
    return (*(state or ()), piece)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_run_chains_gives_every_chain_its_pieces_in_order(workers):
    chains = [[f"{c}.{i}" for i in range(n)] for c, n in enumerate([3, 1, 4, 2])]
    costs = [[1.0] * len(pieces) for pieces in chains]
    assert run_chains(append, chains, costs, workers) == [tuple(pieces) for pieces in chains]


def test_the_stages_are_scikit_learns_default():
    from sklearn.ensemble import GradientBoostingClassifier

    assert GradientBoostingClassifier().n_estimators == STAGES
