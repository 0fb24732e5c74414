"""A protocol's compact form: what a board entry ships of each candidate run so that its numbers
can be recomputed with no runs present (``harness.leaderboards.predictions`` and ``shipped``
hold the machinery; a protocol says only what of its stored arrays matters, and how to score
it again). :meth:`harness.protocols.base.Protocol.compact_form` returns one, or None (the
default): the protocol has no compact form, and its boards verify from their runs only.

The board publishes per dataset a *reference*: each scored split's example ids and the
``labels`` beside them (classes, annotated groups, factor classes), and the run info keys
``info_keys`` that scoring needs. An entry ships, per candidate run and evaluation, the arrays
``shrink`` keeps (keys ``<split>.<name>`` or a plain name), in the reference's example order
unless the run saw another set of examples (then the engine stores its positions). ``expand``
turns them back, with the reference's labels, into the arrays ``scores`` reads.

An evaluation is named in the compact file by ``scope`` (``<run>/<scope>/<array>``) and in a
bundle by ``file_stem`` (``predictions/<dataset>/<run>/<stem>.npz``); both parse back to the
evaluation's frame columns (``step``, and for transfer ``dataset`` and ``layer``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

STEP_FILE = re.compile(r"step_(\d{1,9})")


def small_int(values: np.ndarray, top: int) -> np.ndarray:
    """``values`` in the smallest signed integer type holding -1..top."""
    for dtype in (np.int8, np.int16, np.int32):
        if top <= np.iinfo(dtype).max:
            return values.astype(dtype)
    return values.astype(np.int64)


def lossless_float(values: np.ndarray) -> np.ndarray:
    """``values`` as float32 where that loses nothing (a float32 computation stored as float64
    round-trips exactly), else as float64: every number recomputed from it is the same."""
    values = np.asarray(values)
    narrow = values.astype(np.float32)
    return narrow if np.array_equal(narrow.astype(values.dtype), values) else values.astype(np.float64)


class CompactForm:
    """The default form's naming (one evaluation per checkpoint, ``step``); a protocol subclasses
    it and sets what it ships."""

    labels: tuple[str, ...] = ("y",)      # per-split reference arrays beside the ids
    info_keys: tuple[str, ...] = ()       # a run's info.json values scoring needs, published with the reference
    per_run: tuple[str, ...] = ()         # arrays shipped once per run (``<run>/<split>.<name>``), not per evaluation
    # True: arrays that only the board's metrics read are shipped at the checkpoints the entry's
    # selection picked, the selection's own arrays at every checkpoint (verify refuses a selection
    # that lands elsewhere); False: everything at every checkpoint.
    selected_only: bool = False
    # True: an evaluation names its own dataset (transfer: a probe run covers every task), so one
    # run serves several of a board's datasets.
    evaluations_name_dataset: bool = False
    file_pattern: str = "step_<N>"        # ``file_stem`` in words, for refusals
    # the metrics a board's paired bootstrap can resample (its tie groups), by name: the shipped
    # array of predicted classes the metric scores against the label ``y``, and the reference
    # label whose groups it takes the worst of (None: the plain accuracy)
    paired: Mapping[str, tuple[str, str | None]] = {}

    def needs(self, column: str) -> set[str]:
        """The shipped arrays (``<split>.<name>`` or a plain name) a ``split.metric`` column needs."""
        raise NotImplementedError

    def shrink(self, stored: Mapping[str, np.ndarray], splits: list[str], columns: set[str],
               info: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """One evaluation's stored arrays cut to what ``columns`` need (and the ``per_run`` ones),
        in the smallest exact types."""
        raise NotImplementedError

    def expand(self, shipped: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], meta: Mapping[str, Any],
               run: Mapping[str, Any], entrant: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The arrays and info ``scores`` reads, from one evaluation's shipped arrays, the
        reference's labels (``<split>.<label>``, in the shipped arrays' example order), the
        reference's meta, the run's recorded meta and the entrant."""
        raise NotImplementedError

    def pack(self, name: str, values: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
        """A (checked) array in the smallest type that keeps every number it gives."""
        raise NotImplementedError

    def check(self, name: str, values: np.ndarray, examples: int | None, meta: Mapping[str, Any]) -> str | None:
        """What is wrong with a submitted array (``examples``: its split's id count, None for an
        array of no split), or None. The engine already refused object and non-numeric arrays."""
        raise NotImplementedError

    def encode(self, name: str, values: np.ndarray, labels: Mapping[str, np.ndarray]) -> np.ndarray:
        """A packed array as the compact file holds it, given its split's reference labels
        (``{label: array}``, in the array's example order): by default as it is. ``decode``
        inverts it exactly."""
        return values

    def decode(self, name: str, values: np.ndarray, labels: Mapping[str, np.ndarray]) -> np.ndarray:
        return values

    def consistent(self, arrays: Mapping[str, np.ndarray]) -> str | None:
        """What is wrong between one submitted evaluation's checked arrays, or None."""
        return None

    def scope(self, key: Mapping[str, Any]) -> str:
        """An evaluation's name in the compact file (from ``Protocol.evaluations``' key)."""
        return str(int(key["step"]))

    def key(self, scope: str) -> dict[str, Any] | None:
        """The evaluation a scope names; None for a run's own scope (``run_scope``)."""
        return {"step": int(scope)} if scope.isdigit() else None

    def run_scope(self, key: Mapping[str, Any]) -> str:
        """Where the run-level arrays of an evaluation's run sit (positions, ``per_run``)."""
        return ""

    def file_stem(self, key: Mapping[str, Any]) -> str:
        """An evaluation's file name in a bundle (without ``.npz``)."""
        return f"step_{int(key['step']):07d}"

    def file_key(self, stem: str, dataset: str) -> dict[str, Any] | None:
        """The evaluation a bundle file names; None if the name is not one."""
        match = STEP_FILE.fullmatch(stem)
        return {"step": int(match.group(1))} if match else None
