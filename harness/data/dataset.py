"""The dataset contract: splits of inputs, stable ids and a metadata table.

A dataset module builds a :class:`ShiftDataset` whose ``splits`` map ``train``/``val``/``test``
to :class:`Split` objects. Each split carries a metadata table (as WILDS' ``metadata_array``):
one row per example, one integer column per :class:`Column` of the dataset's :class:`Schema`,
each with a role: the ``label`` (the split's ``y``), an annotated spurious ``attribute``
(Waterbirds' place, CelebA's male), a ``domain`` (Camelyon17's hospital) or a ``factor`` of
variation (dSprites' shape, scale, ...). Groups are a view over chosen columns (:class:`Grouper`);
the annotated groups are (label, the schema's ``attribute``), numbered
``label * num_attr_values + attribute``, as in Waterbirds (y × place) or CelebA (y × male).
A training split may leave examples unlabelled (label ``UNLABELLED``, -1: pretraining data,
whose labels only the online probe reads); only protocols that declare it accept such a dataset.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from harness.core.errors import HarnessError, unknown

UNLABELLED = -1  # the label of an example without one (training splits of pretraining data)

SPLITS = ("train", "val", "test")
ROLES = ("label", "attribute", "domain", "factor")


@dataclass(frozen=True)
class Column:
    """One metadata column: values 0..size-1, optionally named (unnamed values are their numbers)."""

    name: str
    role: str
    size: int
    value_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise unknown(f"role of metadata column {self.name!r}", self.role, ROLES)
        if self.size < 1 or len(self.value_names) not in (0, self.size):
            raise HarnessError(f"metadata column {self.name!r}: size must be >= 1 and match its "
                               f"{len(self.value_names)} value names, got size {self.size}")

    @property
    def names(self) -> tuple[str, ...]:
        return self.value_names or tuple(str(v) for v in range(self.size))

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "size": self.size, "values": list(self.value_names)}


@dataclass(frozen=True)
class Schema:
    """A dataset's metadata columns (exactly one ``label``) and its annotated ``attribute``: the
    column whose values, with the label's, are the worst-group protocol's groups (None: the
    dataset has no annotated groups). Usually an ``attribute`` column; any non-label column may
    serve (Camelyon17 groups by its hospital domain). ``overlapping``: 0/1 columns, each a set of
    examples that may overlap the others' (WILDS' CivilComments identities: a comment can mention
    several); the worst-group protocol also scores the worst (member, label) pair over them."""

    columns: tuple[Column, ...]
    attribute: str | None = None
    overlapping: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = self.names
        if len(set(names)) != len(names):
            raise HarnessError(f"metadata column names must be unique, got {', '.join(names)}")
        labels = [c.name for c in self.columns if c.role == "label"]
        if len(labels) != 1:
            raise HarnessError(f"a dataset's metadata needs exactly one label column, got {labels or 'none'}")
        if self.attribute is not None and self.column(self.attribute).role == "label":
            raise HarnessError(f"the annotated attribute {self.attribute!r} cannot be the label column")
        for name in self.overlapping:
            if self.column(name).role == "label" or self.column(name).size != 2:
                raise HarnessError(f"overlapping group column {name!r} must be a 0/1 column, not the label")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def label(self) -> Column:
        return next(c for c in self.columns if c.role == "label")

    def index(self, name: str) -> int:
        """Position of a column in the table; an unknown name is a HarnessError listing the columns."""
        if name not in self.names:
            raise unknown("metadata column", name, self.names)
        return self.names.index(name)

    def column(self, name: str) -> Column:
        return self.columns[self.index(name)]

    def grouper(self, names: Sequence[str]) -> "Grouper":
        if not names or len(set(names)) != len(names):
            raise HarnessError(f"a grouper needs one or more distinct metadata columns, got {list(names)}; "
                               f"accepted: {', '.join(self.names)}")
        return Grouper(tuple(self.column(n) for n in names))

    def annotated_grouper(self) -> "Grouper":
        """(label, attribute), or the label alone without an annotated attribute."""
        return self.grouper([self.label.name, *([self.attribute] if self.attribute else [])])

    def info(self) -> dict[str, Any]:
        """Plain JSON: the columns (name, role, size, value names; [] when unnamed) and the
        annotated attribute (and any overlapping group columns), what recomputing groups from a
        stored table needs."""
        overlapping = {"overlapping": list(self.overlapping)} if self.overlapping else {}
        return {"columns": [c.info() for c in self.columns], "attribute": self.attribute, **overlapping}


@dataclass(frozen=True)
class Grouper:
    """Groups as a view over chosen columns: a mixed-radix index over their sizes (the last
    column varies fastest), as WILDS' ``CombinatorialGrouper``. A group is named by its values,
    a label's bare (its class name), other columns' as ``column=value``."""

    columns: tuple[Column, ...]

    @property
    def num_groups(self) -> int:
        return math.prod(c.size for c in self.columns)

    @property
    def names(self) -> list[str]:
        names = [""]
        for c in self.columns:
            values = c.names if c.role == "label" else [f"{c.name}={v}" for v in c.names]
            names = [f"{n}, {v}" if n else v for n in names for v in values]
        return names

    def groups(self, split: "Split") -> torch.Tensor:
        """The group index of each example of a split."""
        out = torch.zeros(len(split), dtype=torch.int64, device=split.metadata.device)
        for c in self.columns:
            out = out * c.size + split.column(c.name)
        return out


@dataclass
class Split:
    """One split. ``x`` is a tensor held in memory (served from the device by index) or any
    map-style dataset returning one input tensor per index (read from disk or drawn on demand; one
    with ``__getitems__(positions)`` returns a whole batch as a tensor); ``metadata`` is an
    int64 table with one column per column of ``schema``, its values in 0..size-1 (the label may
    also be ``UNLABELLED``)."""

    x: torch.Tensor | torch.utils.data.Dataset
    ids: torch.Tensor
    schema: Schema
    metadata: torch.Tensor

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.metadata) != n or len(self.x) != n:
            raise ValueError("x, ids and metadata of a split must have the same length")
        if self.metadata.dtype != torch.int64 or tuple(self.metadata.shape[1:]) != (len(self.schema.columns),):
            raise ValueError(f"a split's metadata must be an int64 table with columns {self.schema.names}, "
                             f"got {self.metadata.dtype} of shape {tuple(self.metadata.shape)}")
        sizes = torch.tensor([c.size for c in self.schema.columns], device=self.metadata.device)
        low = torch.tensor([UNLABELLED if c.role == "label" else 0 for c in self.schema.columns],
                           device=self.metadata.device)
        if n and not ((self.metadata >= low) & (self.metadata < sizes)).all():
            raise ValueError(f"metadata values must lie in 0..size-1 of their columns "
                             f"({', '.join(f'{c.name}: {c.size}' for c in self.schema.columns)}); "
                             f"a label may also be {UNLABELLED} (unlabelled)")

    @classmethod
    def of(cls, x: torch.Tensor | torch.utils.data.Dataset, ids: torch.Tensor | np.ndarray, schema: Schema,
           columns: Mapping[str, torch.Tensor | np.ndarray]) -> "Split":
        """A split from its metadata columns by name: every column of the schema, no other."""
        if sorted(columns) != sorted(schema.names):
            raise HarnessError(f"a split's metadata must give exactly the columns {', '.join(schema.names)}; "
                               f"got {', '.join(columns)}")
        table = torch.stack([torch.as_tensor(columns[n]).long() for n in schema.names], 1)
        return cls(x, torch.as_tensor(ids).long(), schema, table)

    def __len__(self) -> int:
        return len(self.ids)

    def column(self, name: str) -> torch.Tensor:
        return self.metadata[:, self.schema.index(name)]

    @property
    def y(self) -> torch.Tensor:
        return self.column(self.schema.label.name)

    @property
    def attr(self) -> torch.Tensor | None:
        """The annotated attribute's column (None without one)."""
        return None if self.schema.attribute is None else self.column(self.schema.attribute)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.x, torch.Tensor)

    def inputs(self, index: torch.Tensor) -> torch.Tensor:
        """The inputs at these positions (a tensor on the split's device)."""
        if self.in_memory:
            return self.x[index]
        positions = index.tolist()
        if hasattr(self.x, "__getitems__"):  # torch's batched-read hook: one call per batch
            return self.x.__getitems__(positions)
        return torch.stack([self.x[i] for i in positions])

    def subset(self, positions: torch.Tensor) -> "Split":
        """The examples at these positions, in this order."""
        positions = positions.to(self.ids.device)
        x = self.x[positions] if self.in_memory else torch.utils.data.Subset(self.x, positions.tolist())
        return Split(x, self.ids[positions], self.schema, self.metadata[positions])

    def to(self, device: torch.device | str) -> "Split":
        x = self.x.to(device) if self.in_memory else self.x
        return Split(x, self.ids.to(device), self.schema, self.metadata.to(device))


@dataclass
class ShiftDataset:
    """A dataset under distribution shift: its splits (sharing one metadata schema) and input shape.

    ``group_weights`` are optional per-group weights for an adjusted average accuracy (WILDS'
    Waterbirds reports accuracy weighted by training group sizes). The class, attribute and
    group properties are views over the schema.
    """

    splits: dict[str, Split]
    input_shape: tuple[int, ...]
    default_backbone: str = "mlp"
    group_weights: Sequence[float] | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if any(s.schema != self.schema for s in self.splits.values()):
            raise ValueError("every split of a dataset must share one metadata schema")

    @property
    def schema(self) -> Schema:
        return next(iter(self.splits.values())).schema

    @property
    def num_classes(self) -> int:
        return self.schema.label.size

    @property
    def unlabelled(self) -> int:
        """How many examples of all splits have no label."""
        return sum(int((s.y == UNLABELLED).sum()) for s in self.splits.values())

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.schema.label.names

    @property
    def attr_name(self) -> str | None:
        return self.schema.attribute

    @property
    def attr_values(self) -> tuple[str, ...]:
        """Names of the annotated attribute's values (empty without one)."""
        return self.schema.column(self.attr_name).names if self.attr_name else ()

    @property
    def num_attr_values(self) -> int:
        return len(self.attr_values)

    @property
    def annotated(self) -> bool:
        return self.attr_name is not None

    def grouper(self, columns: Sequence[str]) -> Grouper:
        """Groups over these metadata columns, e.g. ``["y", "place"]``."""
        return self.schema.grouper(columns)

    @property
    def num_groups(self) -> int:
        return self.schema.annotated_grouper().num_groups

    def annotated_groups(self, split: str) -> torch.Tensor:
        """Group index (label, attribute) of each example of a split; -1 where unannotated."""
        s = self.splits[split]
        if not self.annotated:
            return torch.full_like(s.y, -1)
        return self.schema.annotated_grouper().groups(s)

    def group_names(self) -> list[str]:
        return self.schema.annotated_grouper().names

    def metadata_info(self) -> dict[str, Any]:
        """The metadata schema as plain JSON (for a run's info.json)."""
        return self.schema.info()


def batch_indices(n: int, batch_size: int, step: int, seed: int,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """The indices of the batch at ``step``: a pure function of (n, batch size, step, seed).

    Uniform sampling walks a fresh permutation each epoch; weighted sampling draws with
    replacement. Because nothing but the step is needed, a resumed run sees the same batches
    as an uninterrupted one.
    """
    if weights is not None:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        return torch.multinomial(weights, batch_size, replacement=True, generator=gen)
    per_epoch = max(n // batch_size, 1)
    epoch, position = divmod(step, per_epoch)
    perm = _permutation(n, seed, epoch)
    start = position * batch_size
    return perm[start:start + batch_size]


_perm_cache: dict[tuple[int, int, int], torch.Tensor] = {}


def _permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    key = (n, seed, epoch)
    if key not in _perm_cache:
        _perm_cache.clear()
        _perm_cache[key] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
    return _perm_cache[key]


def positions_of(ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each wanted example id sits in ``ids``, and the wanted ids that are not there
    (stored per-example results, such as discovered environments or cached features, are
    matched to a split by id, never by position)."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64), wanted
    order = np.argsort(ids, kind="stable")
    found = order[np.minimum(np.searchsorted(ids, wanted, sorter=order), len(ids) - 1)]
    return found, wanted[ids[found] != wanted]


def chunks(n: int, size: int) -> Iterator[torch.Tensor]:
    """Consecutive index ranges of at most ``size`` covering 0..n-1 (for evaluation)."""
    for start in range(0, n, size):
        yield torch.arange(start, min(start + size, n))
