"""The `None` margin of relation decoding, chosen on dev.

Relation F1 is scored over the non-`None` labels only, so a classifier trained with plain cross-entropy on data that
is 63% `None` (MNRE) trades recall away: it says `None` whenever that is the single most likely class. Decoding
with a margin m predicts `None` only where

    log p(None) - max_{c != None} log p(c) > m,

and otherwise the best non-`None` class; m = 0 is the argmax. After training, the trainer scores dev once, takes
the m that maximises dev micro-F1 (`best_none_margin`), stores it with the model and decodes test with it.
"""
from __future__ import annotations

import torch


def margins(logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logp (..., C) with `None` at index 0 -> (log p(None) - best other, best other class id in 1..C-1)."""
    best, arg = logp[..., 1:].max(-1)
    return logp[..., 0] - best, arg + 1


def decode(logp: torch.Tensor, margin: float) -> torch.Tensor:
    """Class ids (...,) under the margin rule."""
    gap, other = margins(logp)
    return torch.where(gap > margin, torch.zeros_like(other), other)


def best_none_margin(gold: torch.Tensor, logp: torch.Tensor) -> dict[str, float]:
    """gold (N,) class ids (0 = None), logp (N, C) -> {"margin", "f1", "f1_at_zero"}: the margin with the highest
    micro-F1 over non-None labels among every distinct cut between the examples' gaps (ties: the one nearest 0)."""
    gap, other = margins(logp.float())
    cuts = torch.unique(torch.cat([gap, torch.zeros(1)]))
    cuts = torch.cat([cuts[:1] - 1.0, (cuts[1:] + cuts[:-1]) / 2, cuts[-1:] + 1.0, torch.zeros(1)])
    pred = torch.where(gap[None] > cuts[:, None], 0, other[None])  # (K, N)
    tp = ((pred == gold[None]) & (gold[None] != 0)).sum(1).float()
    n_pred, n_gold = (pred != 0).sum(1).float(), float((gold != 0).sum())
    f1 = 2 * tp / (n_pred + n_gold).clamp(min=1.0)
    best = f1.max()
    near = torch.where(f1 >= best - 1e-12, cuts.abs(), torch.full_like(cuts, float("inf")))
    k = int(near.argmin())
    return {"margin": float(cuts[k]), "f1": float(f1[k]), "f1_at_zero": float(f1[-1])}


def decode_sentences(logps: list[torch.Tensor], margin: float, classes: list[str],
                     allowed: torch.Tensor | None = None) -> list[tuple[list, list]]:
    """MJERE: logps per sentence (W, W, C) -> (entities, triples) per sentence under the margin: each cell's own
    class (wordpair.decode_joint), or with `allowed` (wordpair.relation_types) as head.typed_decode decodes."""
    from finetune.wordpair import decode_joint, decode_joint_typed

    if allowed is not None:
        return [decode_joint_typed(lp, margin, lp.shape[0], classes, allowed) for lp in logps]
    out = []
    for lp in logps:
        pred = decode(lp, margin)
        out.append(decode_joint(pred, lp.gather(-1, pred[..., None]).squeeze(-1).exp(), lp.shape[0], classes))
    return out


JOINT_MARGINS = (-4.0, -3.0, -2.0, -1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0)


def best_joint_margin(logps: list[torch.Tensor], classes: list[str], gold_triples: list, gold_entities: list,
                      candidates: tuple[float, ...] = JOINT_MARGINS,
                      allowed: torch.Tensor | None = None) -> dict[str, float]:
    """MJERE: logps per sentence (W, W, C) -> the margin (one for every cell) with the best dev triple F1 after
    decoding (the grid's cell F1 is not the metric: a triple needs both entity cells and its relation cell); with
    `allowed` (wordpair.relation_types) decoded as head.typed_decode decodes."""
    from finetune.metrics import joint_scores

    results = {}
    for m in candidates:
        preds = decode_sentences(logps, m, classes, allowed)
        results[m] = joint_scores(gold_triples, [p[1] for p in preds], gold_entities, [p[0] for p in preds])["f1"]
    best = max(results.values())
    m = min((m for m, f in results.items() if f >= best - 1e-12), key=abs)
    return {"margin": m, "f1": results[m], "f1_at_zero": results[0.0]}
