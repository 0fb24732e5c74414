"""dSprites: the procedural grid, correlated sampling and the real archive's reader."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from dsprites_fixtures import random_rows, write_archive
from harness.datasets.dsprites import ARCHIVE, COLOURS, FACTORS, SIZES, dsprites, procedural_dsprites, render

from harness.core.errors import HarnessError

POOL = int(np.prod(SIZES))


def small(**options):
    return procedural_dsprites(**{"n_train": 200, "n_val": 50, "n_test": 50, "n_shift": 50, **options})


def test_every_combination_of_the_grid_is_drawn_once_when_the_splits_cover_it():
    data = procedural_dsprites(n_train=POOL - 30, n_val=10, n_test=10, n_shift=10)
    ids = np.concatenate([s.ids.numpy() for s in data.splits.values()])
    assert np.array_equal(np.sort(ids), np.arange(POOL)), "splits are disjoint and cover the grid"
    table = torch.cat([s.metadata for s in data.splits.values()]).numpy()
    assert data.schema.names == list(FACTORS)
    assert np.array_equal(np.ravel_multi_index(table.T, SIZES), ids), "an id is its grid index"
    assert len(np.unique(table, axis=0)) == POOL


def test_procedural_images_are_deterministic_and_follow_their_factors():
    first, second = small(seed=3), small(seed=3)
    split = first.splits["train"]
    assert torch.equal(split.ids, second.splits["train"].ids)
    x = split.inputs(torch.arange(20))
    assert x.shape == (20, 1, 64, 64) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(x, second.splits["train"].inputs(torch.arange(20)))
    assert torch.equal(split.x[4], x[4]), "one at a time equals the batched read"
    assert not torch.equal(split.ids, small(seed=4).splits["train"].ids)
    # a square at scale 1 is 18x18 pixels (half-size 9), at scale 0.5 9x9; unrotated, centred
    big, tiny = render(np.array([[0, 5, 0, 16, 16], [0, 0, 0, 16, 16]]))
    assert big.sum() == 18 * 18 and tiny.sum() == 9 * 9
    # each factor changes the image: shape, scale, a heart's orientation, positions
    base = np.array([2, 3, 0, 10, 20])
    for k, step in enumerate([1, 1, 5, 1, 1]):
        moved = base.copy()
        moved[k] += step
        a, b = render(np.stack([base, moved]))
        assert (a != b).any(), FACTORS[k]
    # positions shift the sprite by 44/31 pixels a step
    a, b = render(np.array([[0, 5, 0, 0, 0], [0, 5, 0, 31, 0]]))
    assert np.argmax(b.any(0)) - np.argmax(a.any(0)) == 44


def test_smaller_sigma_correlates_the_training_pair_more_and_other_splits_keep_theirs():
    def corr(data, split, i, j):
        m = data.splits[split].metadata.numpy().astype(float)
        return np.corrcoef(m[:, i], m[:, j])[0, 1]

    loose, tight = small(correlated="posX:posY", sigma=0.5), small(correlated="posX:posY", sigma=0.1)
    x, y = FACTORS.index("posX"), FACTORS.index("posY")
    assert 0.2 < corr(loose, "train", x, y) < corr(tight, "train", x, y)
    assert corr(tight, "train", x, y) > 0.9
    assert tight.info["train_correlation"]["posX:posY"] == pytest.approx(corr(tight, "train", x, y))
    assert abs(corr(tight, "test", x, y)) < 0.35 and abs(corr(tight, "val", x, y)) < 0.35  # independent
    assert corr(tight, "shift", x, y) < -0.9, "the shift split reverses the training pair by default"
    anti = small(correlated="shape:-scale", shift="posX:posY")
    assert corr(anti, "train", 0, 1) < -0.5 and corr(anti, "shift", x, y) > 0.5
    assert abs(corr(small(), "train", x, y)) < 0.35, "no pairs: independent factors"


def test_colour_variant_has_a_colour_factor_and_coloured_pixels():
    data = small(colour=True)
    split = data.splits["train"]
    assert data.input_shape == (3, 64, 64) and data.schema.names == ["colour", *FACTORS]
    x = split.inputs(torch.arange(10))
    for image, colour in zip(x, split.column("colour").tolist()):
        rgb = torch.tensor(list(COLOURS.values())[colour], dtype=torch.float32)
        lit = image.amax(0) > 0
        assert lit.any() and torch.equal(image[:, lit], rgb[:, None].expand(3, int(lit.sum())))


@pytest.mark.parametrize("options, message", [
    ({"correlated": "shape:size"}, "factors: shape, scale"),
    ({"correlated": "posX"}, "<factor>:<factor>"),
    ({"sigma": 0.0}, "sigma must be > 0"),
    ({"n_train": POOL}, "exceed the 737280"),
])
def test_bad_options_name_the_problem(options, message):
    with pytest.raises(HarnessError, match=message):
        small(**options)


def test_archive_reader_reads_the_real_format_and_keeps_only_the_drawn_rows(tmp_path):
    rows = random_rows(120)
    write_archive(tmp_path, rows)
    data = dsprites(root=str(tmp_path), n_train=50, n_val=20, n_test=20, n_shift=20, correlated="scale:posY")
    assert data.info["train_correlation"]["scale:posY"] > 0.3
    for split in data.splits.values():
        ids = split.ids.numpy()
        assert np.array_equal(split.metadata.numpy(), rows[ids])
        assert torch.equal(split.inputs(torch.arange(len(split)))[:, 0], torch.from_numpy(render(rows[ids])).float())
    # the file itself is accepted as root
    assert torch.equal(dsprites(root=str(tmp_path / ARCHIVE), n_train=50, n_val=20, n_test=20, n_shift=20,
                                correlated="scale:posY").splits["test"].ids, data.splits["test"].ids)


def test_a_missing_archive_names_the_file(tmp_path):
    with pytest.raises(HarnessError, match=ARCHIVE):
        dsprites(root=str(tmp_path))
