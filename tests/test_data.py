import pytest
import torch

from harness.data.dataset import Column, Schema, Split, batch_indices

LABEL_ONLY = Schema((Column("y", "label", 2),))


def test_uniform_batches_cover_each_epoch_once_and_depend_only_on_the_step():
    n, bs = 10, 3  # three batches per epoch; the last example of each epoch's permutation waits
    epoch0 = torch.cat([batch_indices(n, bs, s, seed=5) for s in range(3)])
    assert len(set(epoch0.tolist())) == 9
    assert torch.equal(batch_indices(n, bs, 4, seed=5), batch_indices(n, bs, 4, seed=5))
    assert not torch.equal(batch_indices(n, bs, 3, seed=5), batch_indices(n, bs, 3, seed=6))


def test_weighted_batches_follow_the_weights():
    weights = torch.tensor([0.0, 1.0, 3.0], dtype=torch.double)
    drawn = torch.cat([batch_indices(3, 100, s, seed=0, weights=weights) for s in range(20)])
    counts = torch.bincount(drawn, minlength=3)
    assert counts[0] == 0
    assert counts[2] / counts[1] == pytest.approx(3.0, rel=0.15)


def test_split_lengths_must_agree():
    with pytest.raises(ValueError, match="same length"):
        Split(torch.zeros(3, 2), torch.arange(2), LABEL_ONLY, torch.zeros(3, 1, dtype=torch.long))


def test_split_from_a_map_style_dataset_stacks_its_items():
    items = [torch.full((2,), float(i)) for i in range(4)]
    split = Split(items, torch.arange(4), LABEL_ONLY, torch.zeros(4, 1, dtype=torch.long))
    assert not split.in_memory
    assert split.inputs(torch.tensor([3, 1])).tolist() == [[3.0, 3.0], [1.0, 1.0]]


def test_positions_of_matches_ids_in_any_order_and_names_the_missing():
    import numpy as np

    from harness.data.dataset import positions_of

    ids = np.array([40, 10, 30, 20])
    found, missing = positions_of(ids, np.array([20, 40, 10]))
    assert found.tolist() == [3, 0, 1] and missing.tolist() == []
    found, missing = positions_of(ids, np.array([30, 99, 5]))
    assert found[0] == 2 and missing.tolist() == [99, 5]
    assert positions_of(np.array([], dtype=np.int64), np.array([7]))[1].tolist() == [7]
