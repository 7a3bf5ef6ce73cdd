"""InfoNCE and MGIPS-CL's implicit-positive contrastive loss between paired rows (text i <-> image i)."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE: row i of a (N, d) matches row i of b (N, d)."""
    if a.shape[0] < 2:
        return (a.sum() + b.sum()) * 0.0
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / tau  # (N, N)
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def implicit_positive_loss(t: torch.Tensor, v: torch.Tensor, k: int, tau: float = 0.1) -> torch.Tensor:
    """L_IPS = -(1/N) sum_i log( sum_{m <= K} e^{sim(t_i, v_(m))/tau} / sum_j e^{sim(t_i, v_j)/tau} ), where
    v_(1..K) are the K images of the batch most relevant to text i (cosine), taken as positives."""
    N = t.shape[0]
    if k <= 0 or N < 2:
        return (t.sum() + v.sum()) * 0.0
    sim = F.normalize(t, dim=-1) @ F.normalize(v, dim=-1).T  # (N, N)
    logits = sim / tau
    top = sim.detach().topk(min(k, N), dim=-1).indices  # (N, K) positives chosen without gradient
    return -(torch.logsumexp(logits.gather(1, top), -1) - torch.logsumexp(logits, -1)).mean()


def implicit_positive_contrastive(t: torch.Tensor, v: torch.Tensor, k: int, tau: float = 0.1) -> torch.Tensor:
    """MGIPS-CL: the implicit-positive term plus the standard InfoNCE (K = 0 turns the whole term off)."""
    if k <= 0:
        return (t.sum() + v.sum()) * 0.0
    return implicit_positive_loss(t, v, k, tau) + info_nce(t, v, tau)
