"""Empirical risk minimisation."""
from harness.core.registry import ALGORITHMS
from harness.models.algorithm import Algorithm


@ALGORITHMS.register("erm")
class ERM(Algorithm):
    """Empirical risk minimisation: average cross-entropy over uniformly drawn examples."""

    data_parallel = True
