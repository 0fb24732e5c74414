"""L2-regularised logistic regression fitted for a whole grid of C at once.

:func:`fit_path` minimises, for every C of the grid, scikit-learn's ``LogisticRegression``
objective (lbfgs's: the mean cross-entropy plus ``||W||² / (2 C n)``, the intercept not
penalised; multinomial for three classes or more, binomial, one weight vector, for two), and
stops where scikit-learn does: when the largest gradient component is below ``tol``. So the
chosen C and the predictions agree with a loop of ``LogisticRegression(C=c)`` fits
(tests/test_probes.py measures it on a network's features), at a fraction of its cost:

- the features are rotated onto their principal axes once (a rotation leaves the L2 penalty and
  the predictions unchanged; axes without variance are dropped, their weights are zero anyway),
  where the Hessian is close to diagonal, so a diagonal preconditioner makes its conjugate
  gradients converge in a few steps even where the features are strongly correlated;
- Newton's method (Newton-CG, Armijo backtracking) converges in about ten steps where L-BFGS,
  on ill-conditioned features and a large C, takes hundreds;
- every C is one column block of the same matrix products, so a step costs one product for the
  whole grid, and a C that has converged leaves the batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

ARMIJO = 1e-4          # sufficient decrease of a Newton step
MAX_HALVINGS = 40      # a step halved this often without decrease: that C has converged numerically


@dataclass
class LogisticPath:
    """Per C of the grid: ``weights`` (len(cs), features, k) and ``bias`` (len(cs), k) on the
    features as given, with k = 1 (binomial: class 1's logit against class 0's zero) for two
    classes, else one column per class."""

    classes: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    def predict(self, x: np.ndarray, which: int | slice = slice(None)) -> np.ndarray:
        """Predicted classes of the Cs ``which`` (default all: len(cs) × n; an index: n): the
        largest logit, ties to the first class as scikit-learn's ``predict``."""
        logits = np.asarray(x, dtype=np.float64) @ self.weights[which] + self.bias[which][..., None, :]
        if self.weights.shape[2] == 1:
            return self.classes[(logits[..., 0] > 0).astype(np.int64)]
        return self.classes[logits.argmax(-1)]


def fit_path(x: np.ndarray, y: np.ndarray, cs: Sequence[float], max_iter: int = 1000, tol: float = 1e-4,
             device: torch.device | str = "cpu") -> LogisticPath:
    """Fit one logistic regression per C on (standardised) features ``x`` and labels ``y``; at
    most ``max_iter`` Newton steps each."""
    classes, index = np.unique(np.asarray(y), return_inverse=True)
    x = np.asarray(x, dtype=np.float64)
    n, dim = x.shape
    if len(classes) < 2:  # one class: every C predicts it
        return LogisticPath(classes, np.zeros((len(cs), dim, 1)), np.zeros((len(cs), 1)))
    _, singular, axes = np.linalg.svd(x - x.mean(0), full_matrices=False)
    axes = axes[singular > singular[0] * 1e-8].T if len(singular) and singular[0] > 0 else np.zeros((dim, 0))
    z = torch.tensor(np.hstack([x @ axes, np.ones((n, 1))]), dtype=torch.float64, device=device)
    onehot = torch.zeros(n, 1, len(classes), dtype=torch.float64, device=device)
    onehot[torch.arange(n), 0, torch.as_tensor(index, device=device)] = 1
    theta = _newton(z, onehot, torch.tensor([1.0 / (c * n) for c in cs], dtype=torch.float64, device=device),
                    max_iter, tol).cpu().numpy()
    return LogisticPath(classes, np.einsum("dr,rck->cdk", axes, theta[:-1]), theta[-1])


def _newton(z: torch.Tensor, onehot: torch.Tensor, lam: torch.Tensor, max_iter: int, tol: float) -> torch.Tensor:
    """Newton-CG on the rotated features ``z`` (n × (r + 1), the last column the intercept's)
    for every penalty λ = 1 / (C n) at once; returns θ, (r + 1) × len(λ) × k."""
    n, r1 = z.shape
    binomial = onehot.shape[2] == 2
    k = 1 if binomial else onehot.shape[2]
    target = onehot[..., 1:] if binomial else onehot
    penalised = torch.ones(r1, 1, 1, dtype=z.dtype, device=z.device)
    penalised[-1] = 0
    theta = torch.zeros(r1, len(lam), k, dtype=z.dtype, device=z.device)
    done = torch.zeros(len(lam), dtype=torch.bool, device=z.device)

    def logits(t: torch.Tensor) -> torch.Tensor:
        out = (z @ t.reshape(r1, -1)).view(n, t.shape[1], k)
        return torch.cat([torch.zeros_like(out), out], 2) if binomial else out

    def objective(t: torch.Tensor, lam_: torch.Tensor) -> torch.Tensor:
        out = logits(t)
        cross_entropy = (torch.logsumexp(out, 2) - (out * onehot).sum(2)).mean(0)
        return cross_entropy + 0.5 * lam_ * (t * penalised).square().sum((0, 2))

    for _ in range(max_iter):
        probs = torch.softmax(logits(theta), 2)
        modelled = probs[..., 1:] if binomial else probs
        grad = (z.T @ (modelled - target).reshape(n, -1)).view(r1, -1, k) / n + lam.view(1, -1, 1) * penalised * theta
        done |= grad.abs().amax((0, 2)) <= tol
        active = torch.nonzero(~done).flatten()
        if len(active) == 0:
            break
        lam_a = lam[active].view(1, -1, 1)
        grad, probs, modelled = grad[:, active], probs[:, active], modelled[:, active]
        curvature = modelled * (1 - modelled)

        def hessian_times(v: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
            """H v for the Cs ``which`` (indices into the active ones)."""
            a = (z @ v.reshape(r1, -1)).view(n, -1, k)
            if binomial:
                mixed = curvature[:, which] * a
            else:
                p = probs[:, which]
                mixed = p * (a - (p * a).sum(2, keepdim=True))
            return (z.T @ mixed.reshape(n, -1)).view(r1, -1, k) / n + lam_a[:, which] * penalised * v

        diagonal = (z.square().T @ curvature.reshape(n, -1)).view(r1, -1, k) / n + lam_a * penalised + 1e-12
        step = _conjugate_gradients(hessian_times, grad, diagonal, tol)
        theta[:, active], stalled = _backtrack(objective, theta[:, active], step, grad, lam_a.flatten())
        done[active[stalled]] = True
    return theta


def _conjugate_gradients(hessian_times, grad: torch.Tensor, diagonal: torch.Tensor, tol: float) -> torch.Tensor:
    """The Newton step: H s = -g solved by preconditioned conjugate gradients per C, each to the
    usual truncated-Newton accuracy (residual below min(0.5, √|g|) |g|), but no further than
    half the gradient tolerance: the residual is about the next step's gradient."""
    step = torch.zeros_like(grad)
    residual = -grad
    preconditioned = residual / diagonal
    direction = preconditioned.clone()
    product = (residual * preconditioned).sum((0, 2))
    norm = grad.square().sum((0, 2)).sqrt()
    target = torch.clamp(torch.clamp(norm.sqrt(), max=0.5) * norm, min=tol / 2)
    running = norm > 0
    for _ in range(2 * grad.shape[0] * grad.shape[2]):
        which = torch.nonzero(running).flatten()
        if len(which) == 0:
            break
        curved = torch.zeros_like(direction)  # a C whose steps have converged leaves the products
        curved[:, which] = hessian_times(direction[:, which], which)
        along = (direction * curved).sum((0, 2))
        running &= along > 0  # no curvature left along the direction (rounding): the step so far
        alpha = torch.where(running, product / along, 0.0).view(1, -1, 1)
        step = step + alpha * direction
        residual = residual - alpha * curved
        running &= residual.square().sum((0, 2)).sqrt() > target
        preconditioned = residual / diagonal
        new_product = (residual * preconditioned).sum((0, 2))
        beta = torch.where(running, new_product / product, 0.0)  # a converged C's direction stays finite
        direction = preconditioned + beta.view(1, -1, 1) * direction
        product = new_product
    return step


def _backtrack(objective, theta: torch.Tensor, step: torch.Tensor, grad: torch.Tensor,
               lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Armijo backtracking per C from the full Newton step; returns the new θ and which Cs found
    no decrease or no descent direction (converged as far as the arithmetic allows)."""
    start = objective(theta, lam)
    slope = (grad * step).sum((0, 2))
    ascent = ~(slope < 0)
    size = torch.ones_like(slope)
    failing = torch.ones_like(slope, dtype=torch.bool)
    for _ in range(MAX_HALVINGS):
        failing = objective(theta + size.view(1, -1, 1) * step, lam) > start + ARMIJO * size * slope
        if not failing.any():
            break
        size = torch.where(failing, size / 2, size)
    stalled = failing | ascent
    size = torch.where(stalled, 0.0, size)
    return theta + size.view(1, -1, 1) * step, stalled
