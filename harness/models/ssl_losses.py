"""Self-supervised losses as pure functions of two views' embeddings (N × D each, row i of
``z1`` and ``z2`` the two views of example i).

Each takes an optional ``gather``: a function from this rank's rows to the rows of every rank,
concatenated in rank order, *with gradients* (:func:`all_gather_with_grad`), and this rank's
position ``rank`` in that order. With it, SimCLR's negatives and VICReg's batch statistics span
the global batch, so under DDP (gradients averaged over ranks) W ranks × batch b train the same
objective as 1 rank × W·b:

- InfoNCE averages over this rank's anchors against every rank's candidates: the mean over ranks
  of the per-rank means is the global mean (equal batches);
- VICReg's invariance is a per-rank mean (likewise); its variance and covariance terms are
  computed on the gathered batch, identical on every rank: the gather's backward sums each
  rank's gradient (W times the term's), which DDP's average divides back.

Without ``gather`` (one process) each is the plain single-batch loss.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F

Gather = Callable[[torch.Tensor], torch.Tensor]


def all_gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` concatenated in rank order (dim 0), differentiable
    (``torch.distributed.nn.functional.all_gather``); ``t`` itself outside a process group."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in torch 2.14 for a private replacement; still exact
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        return torch.cat(all_gather(t), 0)


def distributed() -> tuple[Gather | None, int]:
    """(gather, rank) for the current process group; (None, 0) outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return all_gather_with_grad, dist.get_rank()
    return None, 0


def _global(z: torch.Tensor, gather: Gather | None) -> torch.Tensor:
    return z if gather is None else gather(z)


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2, single_negative: bool = False,
             gather: Gather | None = None, rank: int = 0) -> torch.Tensor:
    """SimCLR's NT-Xent: each of the 2b local views is an anchor whose positive is the other view
    of its example, among the 2N − 1 other views of the (global) batch, on cosine similarities
    divided by ``temperature``; the mean over anchors. ``single_negative``: the candidates are
    the positive and ONE negative, the other view of the next example of the global batch
    (cyclically) — the one-negative variant that still learns (Bordes et al.)."""
    b = len(z1)
    anchors = F.normalize(torch.cat([z1, z2]), dim=1)  # 2b: this rank's first views, then its second
    if gather is None:
        candidates, n = anchors, b
    else:  # one collective; rows reordered to every rank's first views, then every rank's second
        d = anchors.shape[1]
        candidates = gather(anchors).view(-1, 2, b, d).transpose(0, 1).reshape(-1, d)
        n = len(candidates) // 2
    own = torch.arange(b, device=z1.device) + rank * b  # global positions of the local examples
    g1, g2 = candidates[:n], candidates[n:]
    if single_negative:
        nxt = (own + 1) % n
        pos = (anchors * torch.cat([g2[own], g1[own]])).sum(1)
        neg = (anchors * torch.cat([g2[nxt], g1[nxt]])).sum(1)
        logits = torch.stack([pos, neg], 1) / temperature
        return F.cross_entropy(logits, torch.zeros(2 * b, dtype=torch.long, device=z1.device))
    logits = anchors @ candidates.T / temperature
    self_idx = torch.cat([own, own + n])
    pos_idx = torch.cat([own + n, own])
    logits[torch.arange(2 * b, device=z1.device), self_idx] = float("-inf")  # not its own candidate
    return F.cross_entropy(logits, pos_idx)


def vicreg_terms(z1: torch.Tensor, z2: torch.Tensor, gather: Gather | None = None,
                 eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """VICReg's three terms (Bardes et al.): invariance (mean squared difference of the views),
    variance (mean over dimensions of relu(1 − std), per view, summed over the two views' means /
    2 — zero at unit std) and covariance (squared off-diagonal covariances / D, per view, summed)."""
    invariance = F.mse_loss(z1, z2)
    variance = z1.new_zeros(())
    covariance = z1.new_zeros(())
    for z in (_global(z1, gather), _global(z2, gather)):
        n, d = z.shape
        z = z - z.mean(0)
        std = torch.sqrt(z.var(0) + eps)
        variance = variance + F.relu(1 - std).mean() / 2
        cov = (z.T @ z) / (n - 1)
        off = cov - torch.diag(torch.diag(cov))
        covariance = covariance + off.pow(2).sum() / d
    return {"invariance": invariance, "variance": variance, "covariance": covariance}


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, invariance: float = 25.0, variance: float = 25.0,
                covariance: float = 1.0, gather: Gather | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted sum of :func:`vicreg_terms` (defaults 25, 25, 1) and the terms themselves."""
    terms = vicreg_terms(z1, z2, gather)
    loss = invariance * terms["invariance"] + variance * terms["variance"] + covariance * terms["covariance"]
    return loss, terms


def directclr_loss(h1: torch.Tensor, h2: torch.Tensor, d0: int, temperature: float = 0.1,
                   gather: Gather | None = None, rank: int = 0) -> torch.Tensor:
    """DirectCLR (Jing et al.): InfoNCE on the first ``d0`` coordinates of the backbone's
    representation, no projector."""
    if not 0 < d0 <= h1.shape[1]:
        raise ValueError(f"DirectCLR's d0 must be in 1..{h1.shape[1]} (the representation's width), got {d0}")
    return info_nce(h1[:, :d0], h2[:, :d0], temperature, gather=gather, rank=rank)
