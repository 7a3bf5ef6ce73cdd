"""The four PROMU losses and the MLM term as pure functions of features, targets and masks. The four are finite on
any batch: no matched pair (CIT) or no box (COE) gives a zero that keeps the graph."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def itm_loss(logits: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
    """logits (B,), match (B,) in {0, 1}: binary cross-entropy."""
    return F.binary_cross_entropy_with_logits(logits, match)


def cit_loss(t: torch.Tensor, v: torch.Tensor, match: torch.Tensor, inv_tau: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between normalised text t (B, d) and image v (B, d) over the matched pairs only."""
    keep = match > 0.5
    if int(keep.sum()) < 2:  # every parameter still gets a (zero) gradient: ranks must reduce the same set
        return (t.sum() + v.sum() + inv_tau) * 0.0
    t, v = F.normalize(t[keep], dim=-1), F.normalize(v[keep], dim=-1)  # (M, d)
    logits = t @ v.T * inv_tau  # (M, M)
    target = torch.arange(len(t), device=t.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row: -sum_k q_k log softmax(logits)_k. logits, target (..., K) -> (...)."""
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1)


def box_features(fused_patches: torch.Tensor, box_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the fused patch states inside each box: (B, P, D), (B, NB, P) -> (B, NB, D)."""
    m = box_mask.to(fused_patches.dtype)
    return torch.bmm(m, fused_patches) / m.sum(-1, keepdim=True).clamp(min=1.0)


def coe_loss(ent_logits: torch.Tensor, ent_target: torch.Tensor, box_valid: torch.Tensor) -> torch.Tensor:
    """ent_logits, ent_target (B, NB, E); box_valid (B, NB): mean soft CE over the real boxes."""
    if not bool(box_valid.any()):
        return ent_logits.sum() * 0.0
    return soft_cross_entropy(ent_logits[box_valid], ent_target[box_valid]).mean()


def cir_loss(rel_logits: torch.Tensor, rel_target: torch.Tensor) -> torch.Tensor:
    """rel_logits, rel_target (B, R): mean soft CE."""
    return soft_cross_entropy(rel_logits, rel_target).mean()


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (M, V) at the M >= 1 masked positions, labels (M,): mean cross-entropy (PromuTask.mlm handles a batch
    without masks)."""
    return F.cross_entropy(logits.float(), labels)
