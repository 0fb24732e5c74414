"""What a run runs on: the torch device a config names and the intra-op threads it uses.

Beside ``run.py`` rather than in it, so that the feature cache (which ``run.py`` imports) can
pick a device without importing the run loop.
"""
from __future__ import annotations

import os

import torch

from harness.core.errors import HarnessError


def pick_device(name: str) -> torch.device:
    """The torch device of a config's ``device`` (``auto``: CUDA where there is one, else CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HarnessError(f"device {name!r} is not a torch device; accepted: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HarnessError(f"device {name!r}: this machine has no usable CUDA GPU; accepted here: auto, cpu")
    return device


_THREAD_CEILING: list[int] = []  # torch's thread count before this process's first run


def pick_threads(setting: str | int) -> int:
    """Torch's intra-op threads for a run: a number as given; ``auto``: the cores not busy
    (usable cores minus the rounded 1-minute load, at least 1; after a first run in this process,
    the load its threads added is not counted as busy), never more than the process had before
    its first run (``OMP_NUM_THREADS``, a launcher's share). On a shared machine a small model on
    more threads than free cores runs several times slower."""
    own = torch.get_num_threads() if _THREAD_CEILING else 0
    if not _THREAD_CEILING:
        _THREAD_CEILING.append(torch.get_num_threads())
    if setting != "auto":
        return int(setting)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = max(0, round(os.getloadavg()[0] - own))
    return max(1, min(_THREAD_CEILING[0], cores - busy))
