"""WILDS datasets: Waterbirds, CelebA, CivilComments and Camelyon17, read by the ``wilds``
package's own classes from a local root.

Files live where WILDS puts them, ``<root>/<name>_v1.0/`` (``root`` defaults to
``$HARNESS_DATA_ROOT``, else ``./data``). Nothing is downloaded unless
``dataset.options.download=true``; without it the folder and its ``RELEASE_v1.0.txt`` marker are
checked before WILDS is called, so WILDS never starts a download on its own.

Example ids are row positions in WILDS' metadata table (its example index), stable across runs.
Each split's metadata holds WILDS' label as ``y`` and chosen WILDS metadata fields under our
column names (Waterbirds' ``background`` as ``place``).
Inputs are read from disk on access: images through timm's eval transform (resize, centre crop,
normalise) of ``transform_model``'s pretrained data config, text through a Hugging Face tokenizer.
MultiNLI is not among wilds 2.0.0's datasets, so it is not here.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from harness.core.errors import HarnessError, unknown
from harness.core.hub import from_local
from harness.core.options import Option
from harness.core.registry import DATASETS
from harness.data.dataset import Column, Schema, ShiftDataset, Split

DATA_VERSION = "1.0"
# Bump when the mapping from WILDS tables to our splits, labels or attributes changes: it is part
# of every dataset's fingerprint, so cached features of the old mapping are never reused.
ADAPTER_VERSION = 1
OFFICIAL_SPLITS = ("train", "val", "test")
# WILDS' adj_acc_avg for Waterbirds weights group accuracies by the official training group sizes;
# ordered as our groups, y * 2 + place: (landbird, land), (landbird, water), (waterbird, land), (waterbird, water).
WATERBIRDS_TRAIN_GROUP_SIZES = (3498.0, 184.0, 56.0, 1057.0)
CIVIL_IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white")
IMAGE_SIZE = 224


def data_root(root: str) -> Path:
    return Path(root or os.environ.get("HARNESS_DATA_ROOT") or "data")


@contextmanager
def _pandas_for_wilds() -> Iterator[None]:
    """wilds 2.0 writes integers into CivilComments' string ``split`` column, which pandas >= 3
    refuses for its default ``str`` dtype; read strings as objects while WILDS loads, and silence
    the warnings wilds triggers on pandas 3 (non-writable arrays, the option's deprecation)."""
    import pandas as pd

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        warnings.filterwarnings("ignore", message=".*infer_string.*")
        with ExitStack() as stack:
            if _has_option("future.infer_string"):
                stack.enter_context(pd.option_context("future.infer_string", False))
            yield


def _has_option(name: str) -> bool:
    import pandas as pd

    try:
        pd.get_option(name)
    except KeyError:  # pandas' OptionError
        return False
    return True


def load_wilds(name: str, root: str, download: bool, required: Sequence[str]) -> Any:
    """The WILDS dataset ``name`` from ``<root>/<name>_v1.0/``, after checking that its files are
    there (unless a download was asked for)."""
    base = data_root(root)
    folder = base / f"{name}_v{DATA_VERSION}"
    fix = (f"set dataset.options.root (or $HARNESS_DATA_ROOT) to the folder that holds {folder.name}/, "
           f"or add dataset.options.download=true to let WILDS download it")
    if not download:
        if not folder.is_dir():
            raise HarnessError(f"{name}: the WILDS folder {folder}/ does not exist; {fix}")
        missing = [f for f in (f"RELEASE_v{DATA_VERSION}.txt", *required) if not (folder / f).exists()]
        if missing:
            raise HarnessError(f"{name}: {folder}/ lacks {', '.join(missing)} (WILDS writes "
                               f"RELEASE_v{DATA_VERSION}.txt when a download is complete; create it empty if you "
                               f"copied the files yourself); {fix}")
    import wilds

    try:
        with _pandas_for_wilds():
            return wilds.get_dataset(dataset=name, root_dir=str(base), download=download, version=DATA_VERSION)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise HarnessError(f"{name}: WILDS could not read {folder}/: {type(exc).__name__}: {exc}") from exc


def fingerprint(folder: Path, files: Sequence[str]) -> str:
    """Identity of the dataset's content: the metadata files' bytes, the wilds version and this
    adapter's version (images are not hashed: their names and labels are in the metadata)."""
    import wilds

    digest = hashlib.sha256(f"wilds={wilds.__version__};adapter={ADAPTER_VERSION}".encode())
    for name in files:
        digest.update(name.encode())
        with open(folder / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def image_transform(model: str = "", size: int = 0) -> tuple[Callable, tuple[int, int, int]]:
    """timm's eval transform for the pretrained data config of ``model`` (``resnet50``,
    ``timm:vit_base_patch16_224.augreg_in21k``); without a model, timm's defaults at 224 pixels
    with ImageNet normalisation. ``size`` > 0 overrides the input size. Returns the transform and
    the shape of the tensors it makes."""
    import timm
    from timm.data import create_transform, resolve_data_config

    pretrained_cfg = None
    if model:
        name = model.removeprefix("timm:")
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None:
            raise HarnessError(f"transform_model {model!r} has no timm data config; give a timm model name "
                               "(timm.list_models(pretrained=True)) or leave it empty for 224-pixel ImageNet defaults")
        pretrained_cfg = cfg.to_dict()
    args = {"input_size": (3, size, size)} if size > 0 else {}
    if pretrained_cfg is None and not args:
        args = {"input_size": (3, IMAGE_SIZE, IMAGE_SIZE)}
    config = resolve_data_config(args=args, pretrained_cfg=pretrained_cfg)
    return create_transform(**config, is_training=False), tuple(config["input_size"])


class Tokenize:
    """Text → a (2, max_length) int64 tensor: token ids, then the attention mask. Ids are below
    ``vocab_size``."""

    def __init__(self, tokenizer: Any, name: str, max_length: int):
        self.tokenizer, self.name, self.max_length = tokenizer, name, max_length
        vocab = tokenizer.get_vocab()
        self.vocab_size = max(vocab.values()) + 1
        self.vocab_hash = hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()[:12]

    def __call__(self, text: str) -> torch.Tensor:
        enc = self.tokenizer(text, padding="max_length", truncation=True, max_length=self.max_length)
        return torch.tensor([enc["input_ids"], enc["attention_mask"]], dtype=torch.int64)

    def __repr__(self) -> str:
        return (f"Tokenize({self.name!r}, {type(self.tokenizer).__name__}, max_length={self.max_length}, "
                f"vocab={self.vocab_hash})")


def load_tokenizer(name: str, max_length: int) -> Tokenize:
    """A Hugging Face tokenizer from the local cache or a local folder; never from the hub."""
    tokenizer = from_local("AutoTokenizer", name, "the text dataset's tokenizer (dataset.options.tokenizer)")
    return Tokenize(tokenizer, name, max_length)


class WildsInputs(torch.utils.data.Dataset):
    """The transformed inputs of a WILDS subset, read from disk on access."""

    def __init__(self, subset: Any):
        self.subset = subset

    @property
    def transform(self) -> Callable:
        return self.subset.transform

    def __len__(self) -> int:
        return len(self.subset)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.subset[index][0]


def wilds_splits(ds: Any, schema: Schema, columns: Mapping[str, torch.Tensor], transform: Callable,
                 limit: int) -> dict[str, Split]:
    """WILDS' official train/val/test splits (Camelyon17's val and test are its OOD ones), with
    the metadata ``columns`` (over WILDS' whole table) of their examples; ``limit`` > 0 keeps the
    first examples of each."""
    from wilds.datasets.wilds_dataset import WILDSSubset

    splits = {}
    split_array = np.asarray(ds.split_array).astype(np.int64)
    for name in OFFICIAL_SPLITS:
        index = np.flatnonzero(split_array == ds.split_dict[name])
        if limit > 0:
            index = index[:limit]
        ids = torch.from_numpy(index.astype(np.int64))
        splits[name] = Split.of(WildsInputs(WILDSSubset(ds, index, transform)), ids, schema,
                                {column: values[ids] for column, values in columns.items()})
    return splits


def _column(ds: Any, field: str) -> torch.Tensor:
    return ds.metadata_array[:, ds.metadata_fields.index(field)]


def wilds_columns(ds: Any, fields: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """WILDS' labels as ``y``, and its metadata ``fields`` under our column names (``{"place": "background"}``)."""
    return {"y": ds.y_array, **{ours: _column(ds, theirs) for ours, theirs in fields.items()}}


def _info(name: str, ds: Any, files: Sequence[str], options: dict[str, Any], transform: Callable,
          headline: str, **extra: Any) -> dict[str, Any]:
    """What identifies the dataset (the feature cache keys on name, options, fingerprint,
    transform) and how it is scored; JSON-serialisable, as run folders store it."""
    return {"name": name, "source": "wilds", "wilds_name": ds.dataset_name, "data_version": DATA_VERSION,
            "data_dir": str(ds.data_dir), "fingerprint": fingerprint(Path(ds.data_dir), files),
            "options": options, "transform": repr(transform), "headline_metric": headline, **extra}


def image_dataset(name: str, wilds_name: str, files: Sequence[str], folder: str, schema: Schema,
                  fields: Mapping[str, str], headline: str, root: str, download: bool, limit: int,
                  transform_model: str, image_size: int, info: dict[str, Any], **options: Any) -> ShiftDataset:
    """What WILDS' image datasets share: files checked, timm's transform, the official splits with
    the label and WILDS' metadata ``fields`` (ours: theirs) as the ``schema``'s columns;
    ``options`` are the ShiftDataset's own."""
    ds = load_wilds(wilds_name, root, download, (*files, *([folder] if folder else [])))
    transform, shape = image_transform(transform_model, image_size)
    loaded = {"limit": limit, "transform_model": transform_model, "image_size": image_size}
    return ShiftDataset(splits=wilds_splits(ds, schema, wilds_columns(ds, fields), transform, limit),
                        input_shape=shape, info=_info(name, ds, files, loaded, transform, headline, **info), **options)


# limit 0: every example; image_size 0: the transform model's own size.
IMAGE_OPTIONS = {"limit": Option(0, int, low=0), "image_size": Option(0, int, low=0)}
WATERBIRDS_FILES = ("metadata.csv",)
WATERBIRDS_SCHEMA = Schema((Column("y", "label", 2, ("landbird", "waterbird")),
                            Column("place", "attribute", 2, ("land", "water"))), attribute="place")


@DATASETS.register("waterbirds", options=IMAGE_OPTIONS)
def waterbirds(root: str = "", download: bool = False, limit: int = 0, transform_model: str = "",
               image_size: int = 0) -> ShiftDataset:
    """Waterbirds (WILDS): landbird vs waterbird, attribute = background place (land/water)."""
    return image_dataset(
        "waterbirds", "waterbirds", WATERBIRDS_FILES, "", WATERBIRDS_SCHEMA, {"place": "background"},
        "worst_group_acc", root, download, limit, transform_model, image_size,
        info={"also_reported": "adjusted_avg_acc (WILDS' adj_acc_avg: group accuracies weighted by "
                               "the official training group sizes 3498/184/56/1057)"},
        default_backbone="timm:resnet50", group_weights=WATERBIRDS_TRAIN_GROUP_SIZES)


CELEBA_FILES = ("list_attr_celeba.csv", "list_eval_partition.csv")
CELEBA_SCHEMA = Schema((Column("y", "label", 2, ("not blond", "blond")), Column("male", "attribute", 2, ("no", "yes"))),
                       attribute="male")


@DATASETS.register("celeba", options=IMAGE_OPTIONS)
def celeba(root: str = "", download: bool = False, limit: int = 0, transform_model: str = "",
           image_size: int = 0) -> ShiftDataset:
    """CelebA (WILDS): blond hair or not, attribute = the Male annotation."""
    return image_dataset(
        "celeba", "celebA", CELEBA_FILES, "img_align_celeba", CELEBA_SCHEMA, {"male": "male"}, "worst_group_acc",
        root, download, limit, transform_model, image_size, info={}, default_backbone="timm:resnet50")


CIVIL_FILES = ("all_data_with_identities.csv",)
CIVIL_COLUMNS = (Column("y", "label", 2, ("non-toxic", "toxic")), Column("identity", "attribute", 2, ("none", "any")),
                 *(Column(name, "attribute", 2, ("no", "yes")) for name in CIVIL_IDENTITIES))


@DATASETS.register("civilcomments", options={"limit": IMAGE_OPTIONS["limit"],
                                                "max_length": Option(300, int, low=1)})
def civilcomments(root: str = "", download: bool = False, limit: int = 0, attribute: str = "any",
                  tokenizer: str = "bert-base-uncased", max_length: int = 300) -> ShiftDataset:
    """CivilComments (WILDS): toxic or not, attribute = identity mentioned (any of WILDS' eight, or one).

    Inputs are token ids and attention masks; the default backbone learns token embeddings over
    the tokenizer's vocabulary (``text:<vocab size>``), so it trains offline; ``hf:<model>`` fine-tunes
    a locally cached Hugging Face encoder instead.

    WILDS' identities overlap (a comment may mention several), so no single attribute reproduces
    its 16 overlapping evaluation groups. The metadata has each identity as a 0/1 column and
    ``identity``, 1 when any of the eight scores >= 0.5. ``attribute="any"`` (default) makes
    ``identity`` the annotated attribute, the partition BalancingGroups/XRM train on; naming one
    identity (``black``) makes that identity's column the attribute. The eight identities are the
    schema's overlapping groups, so the worst-group protocol also scores WILDS' official worst-group
    accuracy over them (``overlapping_worst_group_acc``), its headline metric.
    """
    accepted = ("any", *CIVIL_IDENTITIES)
    if attribute not in accepted:
        raise unknown("civilcomments attribute (dataset.options.attribute)", attribute, accepted)
    ds = load_wilds("civilcomments", root, download, CIVIL_FILES)
    tokenize = load_tokenizer(tokenizer, max_length)
    schema = Schema(CIVIL_COLUMNS, attribute="identity" if attribute == "any" else attribute,
                    overlapping=CIVIL_IDENTITIES)
    identities = identity_matrix(ds)
    columns = {"y": ds.y_array, "identity": identities.any(1), **dict(zip(CIVIL_IDENTITIES, identities.T))}
    options = {"limit": limit, "attribute": attribute, "tokenizer": tokenizer, "max_length": max_length}
    return ShiftDataset(
        splits=wilds_splits(ds, schema, columns, tokenize, limit), input_shape=(2, max_length),
        default_backbone=f"text:{tokenize.vocab_size}",
        info=_info("civilcomments", ds, CIVIL_FILES, options, tokenize, "overlapping_worst_group_acc", modality="text"))


def identity_matrix(ds: Any) -> torch.Tensor:
    """(examples × 8) 0/1 tensor: which of WILDS' eight identities each comment mentions."""
    return torch.stack([_column(ds, name) for name in CIVIL_IDENTITIES], 1).long()


CAMELYON_FILES = ("metadata.csv",)
CAMELYON_SCHEMA = Schema((Column("y", "label", 2, ("normal", "tumor")), Column("hospital", "domain", 5)),
                         attribute="hospital")


@DATASETS.register("camelyon17", options=IMAGE_OPTIONS)
def camelyon17(root: str = "", download: bool = False, limit: int = 0, transform_model: str = "",
               image_size: int = 0) -> ShiftDataset:
    """Camelyon17 (WILDS): tumour in a patch or not; groups label × hospital; OOD val and test.

    The hospital, a domain column of the metadata, serves as the annotated attribute."""
    return image_dataset(
        "camelyon17", "camelyon17", CAMELYON_FILES, "patches", CAMELYON_SCHEMA, {"hospital": "hospital"}, "avg_acc",
        root, download, limit, transform_model, image_size,
        info={"split_map": {"train": "train (hospitals 0, 3, 4)", "val": "val (OOD, hospital 1)",
                            "test": "test (OOD, hospital 2)"}},
        default_backbone="timm:densenet121")
