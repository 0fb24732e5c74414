"""Metadata tables: named integer columns with roles, and groups as a view over chosen columns."""
from __future__ import annotations

import json

import pytest
import torch
from harness.datasets.background import background_fashion_mnist
from harness.datasets.colored import FASHION_CLASSES

from harness.core.errors import HarnessError
from harness.core.registry import DATASETS
from harness.data.dataset import Column, Schema, ShiftDataset, Split

LABEL = Column("y", "label", 2, ("cat", "dog"))
PLACE = Column("place", "attribute", 3, ("land", "water", "air"))
HOSPITAL = Column("hospital", "domain", 2)
SCHEMA = Schema((LABEL, PLACE, HOSPITAL), attribute="place")
ROWS = [(0, 0, 1), (0, 2, 0), (1, 1, 1), (1, 2, 0), (0, 1, 0)]  # (y, place, hospital)


def hand_made(schema: Schema = SCHEMA, rows=ROWS) -> Split:
    return Split(torch.zeros(len(rows), 1), torch.arange(10, 10 + len(rows)), schema, torch.tensor(rows))


def dataset(split: Split) -> ShiftDataset:
    return ShiftDataset({"train": split, "val": split, "test": split}, input_shape=(1,))


def test_a_grouper_over_one_column_numbers_its_values():
    grouper = SCHEMA.grouper(["place"])
    assert grouper.num_groups == 3
    assert grouper.names == ["place=land", "place=water", "place=air"]
    assert grouper.groups(hand_made()).tolist() == [0, 2, 1, 2, 1]
    assert SCHEMA.grouper(["y"]).names == ["cat", "dog"]  # a label's values are its class names


def test_a_grouper_over_two_columns_is_mixed_radix_with_the_last_fastest():
    split = hand_made()
    by_hospital = SCHEMA.grouper(["hospital", "place"])  # hospital * 3 + place
    assert by_hospital.num_groups == 6
    assert by_hospital.names[2:4] == ["hospital=0, place=air", "hospital=1, place=land"]
    assert by_hospital.groups(split).tolist() == [3, 2, 4, 2, 1]
    by_label = SCHEMA.grouper(["y", "place"])  # y * 3 + place
    assert by_label.names[4] == "dog, place=water"
    assert by_label.groups(split).tolist() == [0, 2, 4, 5, 1]


def test_annotated_groups_are_label_and_attribute_and_the_dataset_views_agree():
    ds = dataset(hand_made())
    assert (ds.num_classes, ds.class_names, ds.attr_name, ds.attr_values) == (2, ("cat", "dog"), "place",
                                                                               ("land", "water", "air"))
    assert ds.num_groups == 6 and ds.group_names() == SCHEMA.grouper(["y", "place"]).names
    assert ds.annotated_groups("train").tolist() == [0, 2, 4, 5, 1]
    split = ds.splits["train"]
    assert split.y.tolist() == [0, 0, 1, 1, 0] and split.attr.tolist() == [0, 2, 1, 2, 1]
    assert split.column("hospital").tolist() == [1, 0, 1, 0, 0]


def test_without_an_annotated_attribute_groups_are_the_classes_and_unannotated():
    schema = Schema((LABEL, HOSPITAL))
    ds = dataset(hand_made(schema, [(y, h) for y, _, h in ROWS]))
    assert not ds.annotated and ds.attr_values == () and ds.splits["train"].attr is None
    assert ds.num_groups == 2 and ds.group_names() == ["cat", "dog"]
    assert ds.annotated_groups("test").tolist() == [-1] * 5


def test_annotated_groups_of_a_registered_dataset_are_y_times_colours_plus_colour():
    ds = DATASETS.get("colored_digits").obj(seed=2)
    assert ds.group_names() == ["class>=5, colour=red", "class>=5, colour=green",
                                "class<5, colour=red", "class<5, colour=green"]
    for name, split in ds.splits.items():
        colour = (split.x[:, 1].abs().sum((1, 2)) > 0).long()  # the image sits in its colour's channel
        assert torch.equal(split.attr, colour)
        assert torch.equal(ds.annotated_groups(name), split.y * 2 + colour)
        assert torch.equal(ds.grouper(["y", "colour"]).groups(split), ds.annotated_groups(name))


def test_colored_digits_metadata_columns_and_roles():
    info = DATASETS.get("colored_digits").obj().metadata_info()
    assert info == {"attribute": "colour", "columns": [
        {"name": "y", "role": "label", "size": 2, "values": ["class>=5", "class<5"]},
        {"name": "colour", "role": "attribute", "size": 2, "values": ["red", "green"]},
        {"name": "class", "role": "attribute", "size": 10, "values": [str(d) for d in range(10)]}]}
    assert json.loads(json.dumps(info)) == info
    # the class column is the source digit, from which the binary label was made (25% flipped)
    split = DATASETS.get("colored_digits").obj().splits["train"]
    agree = ((split.column("class") < 5).long() == split.y).float().mean()
    assert 0.7 < agree < 0.8


def test_background_metadata_columns_and_roles(tiny_fashion):
    ds = background_fashion_mnist(root=str(tiny_fashion), n_train=200, n_val=50, n_test=100)
    assert ds.metadata_info() == {"attribute": "place", "columns": [
        {"name": "y", "role": "label", "size": 2, "values": ["class>=5", "class<5"]},
        {"name": "place", "role": "attribute", "size": 2, "values": ["land", "water"]},
        {"name": "class", "role": "attribute", "size": 10, "values": list(FASHION_CLASSES)}]}
    for split in ds.splits.values():  # the label is the garment's class < 5, without noise
        assert torch.equal((split.column("class") < 5).long(), split.y)


def test_factor_columns_round_trip():
    """dSprites-like: shape is the label, scale and posX are factors of variation."""
    schema = Schema((Column("shape", "label", 3, ("square", "ellipse", "heart")), Column("scale", "factor", 6),
                     Column("posX", "factor", 32)))
    gen = torch.Generator().manual_seed(0)
    columns = {"shape": torch.randint(0, 3, (50,), generator=gen), "scale": torch.randint(0, 6, (50,), generator=gen),
               "posX": torch.randint(0, 32, (50,), generator=gen)}
    split = Split.of(torch.rand(50, 1, 4, 4), torch.arange(50), schema, columns).to("cpu")
    for name, values in columns.items():
        assert torch.equal(split.column(name), values)
    assert torch.equal(split.y, columns["shape"])
    grouper = schema.grouper(["scale", "posX"])
    assert grouper.num_groups == 192 and grouper.names[33] == "scale=1, posX=1"
    assert torch.equal(grouper.groups(split), columns["scale"] * 32 + columns["posX"])
    stored = json.loads(json.dumps(dataset(split).metadata_info()))
    assert stored["columns"][2] == {"name": "posX", "role": "factor", "size": 32, "values": []}
    rebuilt = Schema(tuple(Column(c["name"], c["role"], c["size"], tuple(c["values"])) for c in stored["columns"]),
                     stored["attribute"])
    assert rebuilt == schema


def test_bad_column_names_are_errors_naming_the_accepted_columns():
    ds = dataset(hand_made())
    accepted = "accepted: y, place, hospital"
    with pytest.raises(HarnessError, match=f"unknown metadata column 'colour'; {accepted}"):
        ds.grouper(["y", "colour"])
    with pytest.raises(HarnessError, match=f"unknown metadata column 'ward'; {accepted}"):
        ds.splits["train"].column("ward")
    with pytest.raises(HarnessError, match=f"distinct metadata columns, got \\['y', 'y'\\]; {accepted}"):
        ds.grouper(["y", "y"])
    with pytest.raises(HarnessError, match="one or more distinct metadata columns, got \\[\\]"):
        ds.grouper([])
    with pytest.raises(HarnessError, match="unknown metadata column 'colour'; accepted: y, hospital"):
        Schema((LABEL, HOSPITAL), attribute="colour")
    with pytest.raises(HarnessError, match="exactly the columns y, place, hospital; got y, place"):
        Split.of(torch.zeros(2, 1), torch.arange(2), SCHEMA, {"y": [0, 1], "place": [1, 2]})


def test_bad_schemas_and_tables_are_refused():
    with pytest.raises(HarnessError, match="unknown role of metadata column 'x' 'colour'; accepted: label, attribute, "
                                           "domain, factor"):
        Column("x", "colour", 2)
    with pytest.raises(HarnessError, match="size must be >= 1 and match its 3 value names, got size 2"):
        Column("x", "factor", 2, ("a", "b", "c"))
    with pytest.raises(HarnessError, match="exactly one label column, got none"):
        Schema((PLACE,))
    with pytest.raises(HarnessError, match="cannot be the label column"):
        Schema((LABEL, PLACE), attribute="y")
    with pytest.raises(ValueError, match="0..size-1 of their columns \\(y: 2, place: 3, hospital: 2\\)"):
        hand_made(rows=[(0, 3, 0)])
    with pytest.raises(ValueError, match="a label may also be -1"):  # -1 is a label's value only
        hand_made(rows=[(0, -1, 0)])
    assert hand_made(rows=[(-1, 0, 0)]).y.tolist() == [-1]  # an unlabelled example
    with pytest.raises(ValueError, match="every split of a dataset must share one metadata schema"):
        ShiftDataset({"train": hand_made(), "test": hand_made(Schema((LABEL, PLACE, HOSPITAL)))}, input_shape=(1,))


def test_overlapping_group_columns_are_0_1_columns_named_in_the_schema_info():
    black, white = Column("black", "attribute", 2), Column("white", "attribute", 2)
    schema = Schema((LABEL, black, white), attribute="black", overlapping=("black", "white"))
    assert schema.info()["overlapping"] == ["black", "white"]
    assert "overlapping" not in SCHEMA.info()  # a schema without them keeps its info as before
    with pytest.raises(HarnessError, match="overlapping group column 'place' must be a 0/1 column"):
        Schema((LABEL, PLACE), overlapping=("place",))
    with pytest.raises(HarnessError, match="overlapping group column 'y' must be a 0/1 column, not the label"):
        Schema((LABEL, black), overlapping=("y",))
    with pytest.raises(HarnessError, match="unknown metadata column 'jewish'"):
        Schema((LABEL, black), overlapping=("jewish",))
