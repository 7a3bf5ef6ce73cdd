"""Word-pair grid: encoding of gold spans/triples, the three-channel contrastive head, and a pure decoder.

Grid cells (i, j) over the words of a sentence:
- an entity spanning words s..e (inclusive) labels cell (e, s) with its type (the lower triangle, diagonal included);
- a relation labels cell (head start, tail start) with its name; MNRE reads only the cell of the marked pair.
Where entities do not overlap the two kinds of cell never collide and the encoding is exact. MJERE has a few
nested entities (2 of its 475 test sentences); there the decoder keeps the higher-scoring span, so the grid
holds 637 of the 640 test triples.

Head: per channel l in {text, pos, position}, X^l_ij = MLP_l([h_i; h_j; h_i - h_j]); P^t = softmax(W_t X^t);
P^all = softmax(W_a [X^t; X^pos; X^position]); P_final = softmax(P^all + lam * log(P^all / P^t)).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from finetune.examples import ENTITY_TYPES, NONE_RELATION, Example, Span, Triple

IGNORE = -100


def joint_classes(relations: list[str]) -> list[str]:
    return [NONE_RELATION] + list(ENTITY_TYPES) + sorted(relations)


def encode_joint(ex: Example, classes: list[str], n_words: int | None = None) -> torch.Tensor:
    """Gold entities and triples of `ex` -> (W, W) class ids (0 = none)."""
    W = n_words or len(ex.tokens)
    index = {c: i for i, c in enumerate(classes)}
    grid = torch.zeros(W, W, dtype=torch.long)
    for e in ex.entities:
        if e.end <= W:
            grid[e.end - 1, e.start] = index[e.label]
    for t in ex.triples:
        if t.label != NONE_RELATION and t.head.end <= W and t.tail.end <= W:
            grid[t.head.start, t.tail.start] = index[t.label]
    return grid


def decode_joint(pred: torch.Tensor, score: torch.Tensor, n_words: int, classes: list[str]) -> tuple[list, list]:
    """pred, score (W, W) class ids and their probabilities -> (entities, triples). Entities: the lower-triangle
    cells with a type, kept greedily by score without overlap; relations: upper or lower cells with a relation
    name whose row and column start a kept entity."""
    n_types = 1 + len(ENTITY_TYPES)
    cells = []
    for e in range(n_words):
        for s in range(e + 1):
            c = int(pred[e, s])
            if 1 <= c < n_types:
                cells.append((float(score[e, s]), s, e + 1, classes[c]))
    taken = [False] * n_words
    entities = []
    for _, s, e, label in sorted(cells, reverse=True):
        if not any(taken[s:e]):
            entities.append(Span(s, e, label))
            for k in range(s, e):
                taken[k] = True
    entities.sort()
    by_start = {e.start: e for e in entities}
    triples = []
    for i in range(n_words):
        for j in range(n_words):
            c = int(pred[i, j])
            if c >= n_types and i in by_start and j in by_start and i != j:
                triples.append(Triple(by_start[i], by_start[j], classes[c]))
    return entities, sorted(triples)


def _pair(x: torch.Tensor) -> torch.Tensor:
    """(N, W, d) -> (N, W, W, 3d): [x_i; x_j; x_i - x_j] for every pair."""
    W = x.shape[1]
    xi = x[:, :, None, :].expand(-1, -1, W, -1)
    xj = x[:, None, :, :].expand(-1, W, -1, -1)
    return torch.cat([xi, xj, xi - xj], -1)


def _mlp(d_in: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout))


class WordPairHead(nn.Module):
    def __init__(self, dim: int, n_classes: int, n_pos: int, pos_dim: int = 100, position_dim: int = 100,
                 max_words: int = 256, hidden: int = 512, lam: float = 1.0, dropout: float = 0.1):
        super().__init__()
        self.pos_emb = nn.Embedding(n_pos, pos_dim, padding_idx=0)
        self.position_emb = nn.Embedding(max_words, position_dim)
        self.text = _mlp(3 * dim, hidden, dropout)
        self.pos = _mlp(3 * pos_dim, hidden // 4, dropout)
        self.position = _mlp(3 * position_dim, hidden // 4, dropout)
        self.out_text = nn.Linear(hidden, n_classes)
        self.out_all = nn.Linear(hidden + hidden // 2, n_classes)
        self.lam, self.max_words = lam, max_words

    def forward(self, words: torch.Tensor, pos_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """words (N, W, D), pos_ids (N, W) -> log-probabilities (N, W, W, C): "final" and "text"."""
        W = words.shape[1]
        positions = torch.arange(W, device=words.device).clamp(max=self.max_words - 1)
        x_t = self.text(_pair(words))  # (N, W, W, H)
        x_p = self.pos(_pair(self.pos_emb(pos_ids)))  # (N, W, W, H/4)
        x_x = self.position(_pair(self.position_emb(positions)[None].expand(words.shape[0], -1, -1)))
        log_p_t = F.log_softmax(self.out_text(x_t), -1)
        log_p_all = F.log_softmax(self.out_all(torch.cat([x_t, x_p, x_x], -1)), -1)
        # P_final = softmax(P_all + lam * log(P_all / P_t)): keeps what the multimodal channels add to the text one
        final = F.log_softmax(log_p_all.exp() + self.lam * (log_p_all - log_p_t), -1)
        return {"final": final, "text": log_p_t}


def grid_loss(out: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Masked grid NLL of the final and the text-channel distributions; labels (N, W, W) with IGNORE cells."""
    C = out["final"].shape[-1]
    keep = labels != IGNORE
    if not bool(keep.any()):
        return out["final"].sum() * 0.0
    y = labels[keep]
    return F.nll_loss(out["final"].reshape(-1, C)[keep.reshape(-1)], y) + \
        F.nll_loss(out["text"].reshape(-1, C)[keep.reshape(-1)], y)
