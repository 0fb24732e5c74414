"""Empirical risk minimisation."""
from harness.algorithm import Algorithm
from harness.registry import ALGORITHMS


@ALGORITHMS.register("erm")
class ERM(Algorithm):
    """Empirical risk minimisation: average cross-entropy over uniformly drawn examples."""
