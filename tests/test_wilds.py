"""WILDS adapters on tiny folders in each dataset's real layout, read by the real wilds classes."""
from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
import wilds
import wilds_fixtures as F
from harness.datasets import wilds as W

from harness.core import config as configs
from harness.core.errors import HarnessError
from harness.core.registry import DATASETS
from harness.protocols.classification import classification_metrics

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("wilds")
    tables = {"waterbirds": F.make_waterbirds(path), "celeba": F.make_celeba(path),
              "civilcomments": F.make_civilcomments(path), "camelyon17": F.make_camelyon17(path)}
    return path, tables


def build(name: str, root, **options):
    return DATASETS.get(name).obj(root=str(root), **options)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int, reduce: str = "mean") -> torch.Tensor:
    """The one torch_scatter function wilds 2.0's group metrics call (``avg_over_groups``):
    per-index means, 0 for an index that never occurs."""
    assert reduce == "mean"
    sums = torch.zeros(dim_size, dtype=src.dtype).index_add_(0, index, src)
    counts = torch.zeros(dim_size, dtype=src.dtype).index_add_(0, index, torch.ones_like(src))
    return sums / counts.clamp(min=1)


@pytest.fixture
def wilds_eval(monkeypatch):
    """wilds' dataset.eval imports torch_scatter, which wilds does not declare and which must be
    compiled for this torch (pip install --no-build-isolation torch-scatter, about 15 minutes on
    2 cores: too slow for CI). The test provides the one function wilds calls, in sys.modules for
    this test only; the same parity was checked once by hand with the real, compiled package."""
    monkeypatch.setitem(sys.modules, "torch_scatter", types.SimpleNamespace(scatter=scatter_mean))


def expected_ids(table: pd.DataFrame, split: str) -> list[int]:
    return np.flatnonzero(table["split"].to_numpy() == SPLIT_CODES[split]).tolist()


def test_waterbirds_splits_labels_places_ids_and_images(root):
    path, tables = root
    table = tables["waterbirds"]
    ds = build("waterbirds", path, image_size=16)
    assert (ds.num_classes, ds.attr_values, ds.num_groups) == (2, ("land", "water"), 4)
    assert list(ds.group_weights) == [3498, 184, 56, 1057]
    assert ds.input_shape == (3, 16, 16)
    for name, split in ds.splits.items():
        ids = expected_ids(table, name)
        assert split.ids.tolist() == ids
        assert split.y.tolist() == table.y.to_numpy()[ids].tolist()
        assert split.attr.tolist() == table.place.to_numpy()[ids].tolist()
        assert ds.annotated_groups(name).tolist() == (2 * table.y + table.place).to_numpy()[ids].tolist()
    train_groups = np.bincount(ds.annotated_groups("train").numpy(), minlength=4).tolist()
    assert train_groups == [F.WATERBIRDS_COUNTS[0][(y, a)] for y in (0, 1) for a in (0, 1)]
    # the right file reaches the right example: label-1 images are red, label-0 ones blue
    test = ds.splits["test"]
    images = test.inputs(torch.arange(len(test)))
    assert images.shape == (len(test), 3, 16, 16)
    assert ((images[:, 0].mean((1, 2)) > images[:, 2].mean((1, 2))).long() == test.y).all()
    assert ds.info["headline_metric"] == "worst_group_acc" and ds.info["name"] == "waterbirds"


def test_celeba_target_is_blond_hair_and_attribute_male(root):
    path, tables = root
    table = tables["celeba"]
    ds = build("celeba", path, image_size=16)
    for name, split in ds.splits.items():
        ids = expected_ids(table, name)
        assert split.ids.tolist() == ids
        assert split.y.tolist() == table.y.to_numpy()[ids].tolist()
        assert split.attr.tolist() == table.a.to_numpy()[ids].tolist()
    first = ds.splits["train"]
    assert float(first.x[0][0].mean() > first.x[0][2].mean()) == first.y[0].item()
    assert ds.group_names()[3] == "blond, male=yes"


def test_camelyon17_uses_ood_val_and_test_hospitals(root):
    path, tables = root
    table = tables["camelyon17"]
    ds = build("camelyon17", path, image_size=16)
    center, split_col = table.center.to_numpy(), table.split.to_numpy()
    want = {"train": np.flatnonzero((split_col == 0) & np.isin(center, [0, 3, 4])),
            "val": np.flatnonzero(center == 1), "test": np.flatnonzero(center == 2)}
    for name, split in ds.splits.items():
        assert split.ids.tolist() == want[name].tolist()
        assert split.attr.tolist() == center[want[name]].tolist()
        assert split.y.tolist() == table.tumor.to_numpy()[want[name]].tolist()
    assert ds.num_groups == 10 and ds.info["headline_metric"] == "avg_acc"


class FakeTokenizer:
    """Word-level tokenizer with a fixed vocabulary, unknown words [UNK] (what a local Hugging
    Face tokenizer returns)."""

    def __init__(self):
        words = ("comment", "you", "are", "awful", "thank")
        self.vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}

    def get_vocab(self):
        return dict(self.vocab)

    def __call__(self, text, padding, truncation, max_length):
        assert padding == "max_length" and truncation
        ids = [self.vocab.get(w, 1) for w in text.split()][:max_length]
        pad = max_length - len(ids)
        return {"input_ids": ids + [0] * pad, "attention_mask": [1] * len(ids) + [0] * pad}


def fake_transformers(calls: list, error: Exception | None = None) -> types.ModuleType:
    def from_pretrained(name, **kwargs):
        calls.append((name, kwargs))
        if error:
            raise error
        return FakeTokenizer()

    module = types.ModuleType("transformers")
    module.AutoTokenizer = types.SimpleNamespace(from_pretrained=from_pretrained)
    return module


def test_civilcomments_text_path_with_a_local_tokenizer(root, monkeypatch):
    path, tables = root
    table = tables["civilcomments"]
    calls: list = []
    monkeypatch.setitem(sys.modules, "transformers", fake_transformers(calls))
    ds = build("civilcomments", path, tokenizer="my-tokenizer", max_length=6)
    assert calls == [("my-tokenizer", {"local_files_only": True})]
    identities = (table[list(F.CIVIL_IDENTITIES)].to_numpy() >= 0.5)
    for name, split in ds.splits.items():
        ids = np.flatnonzero(table.split.to_numpy() == name)
        assert split.ids.tolist() == ids.tolist()
        assert split.y.tolist() == (table.toxicity.to_numpy()[ids] >= 0.5).astype(int).tolist()
        assert split.attr.tolist() == identities[ids].any(1).astype(int).tolist()
    x = ds.splits["train"].x[0]
    assert x.shape == (2, 6) and x.dtype == torch.int64
    assert x[1].sum().item() == len(table.comment_text[ds.splits["train"].ids[0].item()].split())
    assert ds.input_shape == (2, 6) and ds.attr_values == ("none", "any")
    assert ds.default_backbone == "text:7"  # embeddings for the tokenizer's whole vocabulary
    black = build("civilcomments", path, tokenizer="my-tokenizer", max_length=6, attribute="black")
    test_ids = black.splits["test"].ids.numpy()
    assert black.splits["test"].attr.tolist() == identities[test_ids, 6].astype(int).tolist()
    assert black.attr_name == "black"


def test_civilcomments_trains_offline_with_its_default_backbone(root, monkeypatch, tmp_path, capsys):
    from harness.cli import main
    from harness.core.files import read_jsonl
    from harness.runs.run import train

    path, tables = root
    monkeypatch.setitem(sys.modules, "transformers", fake_transformers([]))
    cfg = configs.resolve({"dataset": {"name": "civilcomments", "options": {"root": str(path)}},
                           "algorithm": {"name": "erm", "hparams": {"batch_size": 8, "lr": 0.01}},
                           "steps": 30, "eval_every": 15, "output_dir": str(tmp_path)})
    assert cfg["backbone"]["name"] == "auto"
    out = train(cfg, progress=False)
    rows = read_jsonl(out / "results.jsonl")
    assert [r["step"] for r in rows] == [15, 30]
    assert rows[-1]["metrics"]["test"]["n"] == (tables["civilcomments"].split == "test").sum()
    # "awful" marks every toxic comment: a backbone that reads the tokens learns it
    assert rows[-1]["metrics"]["train"]["avg_acc"] == 1.0 and rows[-1]["metrics"]["test"]["avg_acc"] == 1.0
    # WILDS' official metric, scored from the stored identity memberships, in every results row
    assert rows[-1]["metrics"]["test"]["overlapping_worst_group_acc"] == 1.0
    # and collect's default table shows it, the headline metric the dataset names
    capsys.readouterr()
    assert main(["collect", str(out), "--rule", "val-avg"]) == 0
    assert "test worst-group acc (overlapping groups)" in capsys.readouterr().out


def test_civilcomments_without_a_tokenizer_is_a_clear_error(root, monkeypatch):
    path, _ = root
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails, as when not installed
    with pytest.raises(HarnessError, match="needs `transformers`, which is not installed"):
        build("civilcomments", path)
    monkeypatch.setitem(sys.modules, "transformers", fake_transformers([], OSError("no such file in the cache")))
    with pytest.raises(HarnessError, match=r"tokenizer \(dataset.options.tokenizer\) .bert-base-uncased. is neither"):
        build("civilcomments", path)
    with pytest.raises(HarnessError, match="accepted: any, male, female"):
        build("civilcomments", path, attribute="jewish")


def test_metadata_columns_keep_every_civilcomments_identity_and_camelyon17s_hospital_domain(root, monkeypatch):
    path, tables = root
    monkeypatch.setitem(sys.modules, "transformers", fake_transformers([]))
    civil = build("civilcomments", path, max_length=6, attribute="white")
    columns = civil.metadata_info()["columns"]
    assert [c["name"] for c in columns] == ["y", "identity", *F.CIVIL_IDENTITIES]
    assert {c["role"] for c in columns[1:]} == {"attribute"} and civil.metadata_info()["attribute"] == "white"
    identities = tables["civilcomments"][list(F.CIVIL_IDENTITIES)].to_numpy() >= 0.5
    for name, split in civil.splits.items():
        ids = split.ids.numpy()
        for k, identity in enumerate(F.CIVIL_IDENTITIES):
            assert split.column(identity).tolist() == identities[ids, k].astype(int).tolist()
        assert split.column("identity").tolist() == identities[ids].any(1).astype(int).tolist()
        assert torch.equal(civil.annotated_groups(name), split.y * 2 + split.column("white"))
    camelyon = build("camelyon17", path, image_size=16)
    assert camelyon.metadata_info() == {"attribute": "hospital", "columns": [
        {"name": "y", "role": "label", "size": 2, "values": ["normal", "tumor"]},
        {"name": "hospital", "role": "domain", "size": 5, "values": []}]}
    assert camelyon.group_names()[1] == "normal, hospital=1"


def test_missing_folder_names_it_and_the_download_flag_without_calling_wilds(tmp_path, monkeypatch):
    def no_wilds(**kwargs):
        raise AssertionError("wilds must not be called")

    monkeypatch.setattr(wilds, "get_dataset", no_wilds)
    with pytest.raises(HarnessError) as err:
        build("waterbirds", tmp_path / "nowhere")
    message = str(err.value)
    assert f"{tmp_path / 'nowhere' / 'waterbirds_v1.0'}/" in message
    assert "dataset.options.download=true" in message
    assert not (tmp_path / "nowhere").exists()  # nothing created either
    (tmp_path / "celebA_v1.0").mkdir()
    (tmp_path / "celebA_v1.0" / "list_attr_celeba.csv").write_text("image_id,Blond_Hair,Male\n")
    with pytest.raises(HarnessError, match=r"lacks RELEASE_v1\.0\.txt, list_eval_partition\.csv, img_align_celeba"):
        build("celeba", tmp_path)
    monkeypatch.setenv("HARNESS_DATA_ROOT", str(tmp_path / "env_root"))
    with pytest.raises(HarnessError, match="env_root/camelyon17_v1.0/ does not exist"):
        DATASETS.get("camelyon17").obj()


def test_unreadable_metadata_is_a_clear_error(tmp_path):
    F.make_waterbirds(tmp_path)
    (tmp_path / "waterbirds_v1.0" / "metadata.csv").write_text("img_id,split\n1,0\n")
    with pytest.raises(HarnessError, match="waterbirds: WILDS could not read .*KeyError"):
        build("waterbirds", tmp_path)


def test_options_transform_and_limit(root):
    path, tables = root
    ds = build("waterbirds", path, limit=3)
    assert [len(s) for s in ds.splits.values()] == [3, 3, 3]
    assert ds.splits["val"].ids.tolist() == expected_ids(tables["waterbirds"], "val")[:3]
    assert ds.input_shape == (3, 224, 224) and ds.splits["val"].x[0].shape == (3, 224, 224)
    assert "Resize(size=256, interpolation=bicubic" in ds.info["transform"]
    assert "0.4850, 0.4560, 0.4060" in ds.info["transform"]
    tv = build("waterbirds", path, limit=1, transform_model="timm:resnet50.tv_in1k")
    assert "interpolation=bilinear" in tv.info["transform"] and tv.input_shape == (3, 224, 224)
    with pytest.raises(HarnessError, match="transform_model 'no_such_net' has no timm data config"):
        build("waterbirds", path, transform_model="no_such_net")
    cfg = configs.resolve({"dataset": {"name": "waterbirds", "options": {"root": str(path), "image_size": 16}}})
    assert cfg["dataset"]["options"]["image_size"] == 16
    with pytest.raises(HarnessError, match="dataset.options.download"):
        configs.resolve({"dataset": {"name": "waterbirds", "options": {"download": "yes"}}})


def noisy_probs(y: torch.Tensor, seed: int, error_rate: float = 0.3) -> np.ndarray:
    """Class probabilities whose argmax is the label except for a random ``error_rate`` of examples."""
    rng = np.random.RandomState(seed)
    y = y.numpy()
    pred = np.where(rng.rand(len(y)) < error_rate, 1 - y, y)
    probs = np.full((len(y), 2), 0.2)
    probs[np.arange(len(y)), pred] = 0.8
    return probs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parity_with_wilds_eval(root, wilds_eval, seed):
    """For the same predictions, harness.protocols.classification gives WILDS' own numbers."""
    path, _ = root
    for name, wilds_name in (("waterbirds", "waterbirds"), ("celeba", "celebA"), ("camelyon17", "camelyon17")):
        ds = build(name, path, image_size=8)
        reference = wilds.get_dataset(dataset=wilds_name, root_dir=str(path), download=False)
        test = ds.splits["test"]
        probs = noisy_probs(test.y, seed)
        ours = classification_metrics(test.y.numpy(), probs, ds.annotated_groups("test").numpy(), ds.num_groups,
                                      ds.num_classes, ds.group_weights)
        theirs, _ = reference.eval(torch.from_numpy(probs.argmax(1)), test.y, reference.metadata_array[test.ids])
        if name == "camelyon17":  # official metric: average accuracy on the OOD test hospital
            assert ours["avg_acc"] == pytest.approx(theirs["acc_avg"], abs=1e-6)
            continue
        assert ours["worst_group_acc"] == pytest.approx(theirs["acc_wg"], abs=1e-6)
        assert 0 < ours["worst_group_acc"] < ours["avg_acc"]  # a real minimum, not a degenerate 0 or 1
        if name == "waterbirds":
            assert ours["adjusted_avg_acc"] == pytest.approx(theirs["adj_acc_avg"], abs=1e-6)
            assert ours["adjusted_avg_acc"] != pytest.approx(ours["avg_acc"])
        else:
            assert ours["avg_acc"] == pytest.approx(theirs["acc_avg"], abs=1e-6)


class StoredPredictions(torch.nn.Module):
    """An algorithm stand-in whose ``predict`` returns given logits, chunk after chunk in the
    order the protocol's ``record`` asks for them."""

    def __init__(self, logits: np.ndarray):
        super().__init__()
        self.logits, self.at = torch.from_numpy(logits), 0

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.at += len(x)
        return self.logits[self.at - len(x):self.at]


@pytest.mark.parametrize("seed", [0, 2])
def test_civilcomments_worst_group_protocol_scores_wilds_official_metric(root, wilds_eval, monkeypatch, seed):
    """The worst-group protocol stores each comment's identity memberships and scores WILDS'
    overlapping worst group from the stored arrays: the number WILDS' own eval gives."""
    from harness.protocols.base import protocol

    path, _ = root
    monkeypatch.setitem(sys.modules, "transformers", fake_transformers([]))
    ds = build("civilcomments", path, max_length=4)
    reference = W.load_wilds("civilcomments", str(path), False, W.CIVIL_FILES)  # wilds' class, pandas 3 patched
    test = ds.splits["test"]
    probs = noisy_probs(test.y, seed)
    theirs, _ = reference.eval(torch.from_numpy(probs.argmax(1)), test.y, reference.metadata_array[test.ids])
    worst_group, cfg = protocol("worst_group"), {"groups": "annotated"}
    state = worst_group.prepare(cfg, ds, torch.device("cpu"))
    arrays = worst_group.record(StoredPredictions(np.log(probs)), "test", test, state, batch_size=7)
    assert arrays["memberships"].shape == (len(test), len(F.CIVIL_IDENTITIES))
    scores = worst_group.scores({f"test.{k}": v for k, v in arrays.items()}, worst_group.info(cfg, ds, state))["test"]
    assert scores["overlapping_worst_group_acc"] == pytest.approx(theirs["acc_wg"], abs=1e-6)
    assert 0 < scores["overlapping_worst_group_acc"] < theirs["acc_avg"]
    assert scores["avg_acc"] == pytest.approx(theirs["acc_avg"], abs=1e-6)
    assert ds.info["headline_metric"] == "overlapping_worst_group_acc"
