"""Data-parallel runs on one machine: torch.distributed (gloo on CPU, nccl on GPU).

A run started by ``torchrun --nproc-per-node W -m harness.cli train ...``, by a launcher with
``ranks: W`` (``processes``: :func:`spawn`; ``slurm``: W tasks of one job, their environment set
by submitit), or by :func:`spawn` in tests and benchmarks, joins the process group named by the
environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``). The
config is the one of a single-process run, hash included: ``batch_size`` is the GLOBAL batch;
every rank draws the same global batch (a pure function of seed and step) and trains on its
contiguous 1/W slice; after each backward the gradients are averaged over ranks by all-reduce (DDP's arithmetic, done in
``Algorithm.step`` so that parameter names and checkpoints stay those of a 1-process run). With
the SSL losses' cross-rank gathers, W ranks × b train the objective of 1 rank × W·b. Rank 0
alone writes the run folder; every rank resumes from its checkpoint, which holds every rank's
RNG state. BatchNorm statistics stay per rank (no SyncBatchNorm on CPU).
"""
from __future__ import annotations

import os
import socket
from typing import Any, Callable

import torch
import torch.distributed as dist


def backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def join(device: torch.device) -> torch.device:
    """Join the process group the environment names (WORLD_SIZE > 1), unless already in one;
    the device this rank uses (on CUDA, the GPU of its LOCAL_RANK)."""
    if not (dist.is_available() and dist.is_initialized()):
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return device
        dist.init_process_group(backend(device))
    if device.type == "cuda" and dist.get_world_size() > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_gradients(params: Any) -> None:
    """Every parameter's gradient replaced by its mean over ranks (one all-reduce, flattened)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Training logs averaged over ranks (every rank passes the same keys)."""
    if not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, (t / dist.get_world_size()).tolist()))


def gather_objects(obj: Any) -> list[Any]:
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def from_rank0(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (the others pass anything, e.g. None)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, backend: str, fn: Callable, args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group(backend)
    try:
        fn(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn(fn: Callable, world: int, *args: Any, backend: str = "gloo") -> None:
    """Run ``fn(*args)`` in ``world`` new processes that form a process group on this machine
    (``fn`` must be importable: a module-level function)."""
    import torch.multiprocessing as mp

    mp.spawn(_entry, args=(world, free_port(), backend, fn, args), nprocs=world, join=True)
