"""What every benchmark's command line shares: ``--smoke``, a tiny size that runs in seconds on the
same code path (the test suite runs every benchmark so, and none can rot), and ``--threads``, the
threads of torch and of the BLAS/OpenMP pools under numpy and scikit-learn, pinned before anything
is timed (on a loaded 2-core machine more threads than free cores run several times slower)."""
from __future__ import annotations

import argparse
from typing import Any

import torch
from threadpoolctl import threadpool_limits


def parse(parser: argparse.ArgumentParser, smoke: dict[str, Any], threads: bool = True) -> argparse.Namespace:
    """The arguments, with ``smoke``'s values over them under ``--smoke``; with ``threads``, a
    ``--threads`` option (default 1) whose value pins torch's and the BLAS/OpenMP pools' threads."""
    if threads:
        parser.add_argument("--threads", type=int, default=1,
                            help="torch and BLAS/OpenMP threads (1 is steadiest on a shared machine)")
    parser.add_argument("--smoke", action="store_true", help=f"a tiny size that runs in seconds: {smoke}")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(smoke)
    if threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    return args
