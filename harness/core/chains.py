"""Chains of resumable pieces of work dealt to processes, the chain with most work left first.

A computation that can stop and continue exactly where it stopped (a boosting fit resumed by warm
start) is cut into a chain of pieces; each piece takes the state its predecessor returned. Dealing
pieces instead of whole computations lets unequal computations share the workers evenly: when a
worker is free it gets the next piece of the chain with the most work left among those not
running. For computations that can be paused this rule (longest remaining first) finishes them all
as early as any schedule can, up to a piece; ``wrap_cuts`` says where to cut. The results are
those of running each chain's pieces in order in one process.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any


def wrap_cuts(work: Sequence[float], workers: int) -> list[list[float]]:
    """Where to cut each computation, as fractions of it (each list ends with 1.0), for ``workers``
    to share them evenly with as few hand-overs as possible (McNaughton's wrap-around rule): lay
    the computations end to end, most work first, and cut at every multiple of the even share,
    max(the largest, total / workers). At most ``workers - 1`` cuts in all."""
    share = max(max(work, default=0.0), sum(work) / max(workers, 1))
    cuts: list[list[float]] = [[1.0] for _ in work]
    start, eps = 0.0, 1e-9 * share  # a boundary within rounding of a computation's end is no cut
    for c in sorted(range(len(work)), key=lambda c: -work[c]):
        end = start + work[c]
        boundary = ((start + eps) // share + 1) * share if share > 0 else end
        while boundary < end - eps:
            cuts[c].insert(-1, (boundary - start) / work[c])
            boundary += share
        start = end
    return cuts


def next_chain(costs: Sequence[Sequence[float]], submitted: Sequence[int], running: Collection[int]) -> int | None:
    """The chain whose next piece to start: the most work left (its pieces not yet submitted)
    among the chains with a piece left and none running, the first of equals; None if none."""
    ready = [c for c, cost in enumerate(costs) if submitted[c] < len(cost) and c not in running]
    return max(ready, key=lambda c: sum(costs[c][submitted[c]:]), default=None)


def run_chains(step: Callable[[Any, Any], Any], chains: Sequence[Sequence[Any]],
               costs: Sequence[Sequence[float]], workers: int) -> list[Any]:
    """The final state of each chain: ``state = step(state, piece)`` over its pieces in order,
    from ``None``, in ``workers`` loky processes (kept for the next call; 1: in this one).
    ``costs`` gives each piece's expected work, in any unit common to all."""
    states: list[Any] = [None] * len(chains)
    if workers <= 1 or len(chains) <= 1:
        for c, pieces in enumerate(chains):
            for piece in pieces:
                states[c] = step(states[c], piece)
        return states
    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(max_workers=workers)
    submitted = [0] * len(chains)
    running: dict[Future, int] = {}
    while True:
        while len(running) < workers and (c := next_chain(costs, submitted, running.values())) is not None:
            running[executor.submit(step, states[c], chains[c][submitted[c]])] = c
            submitted[c] += 1
        if not running:
            return states
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            states[running.pop(future)] = future.result()
