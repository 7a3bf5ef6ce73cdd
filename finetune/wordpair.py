"""Word-pair grid: encoding of gold spans/triples, the three-channel contrastive head, and a pure decoder.

Grid cells (i, j) over the words of a sentence:
- an entity spanning words s..e (inclusive) labels cell (e, s) with its type (the lower triangle, diagonal included);
- a relation labels cell (head start, tail start) with its name; MNRE reads only the cell of the marked pair.
Where entities do not overlap the two kinds of cell never collide and the encoding is exact. MJERE has a few
nested entities (2 of its 475 test sentences); there the decoder keeps the higher-scoring span, so the grid
holds 637 of the 640 test triples.

Head: per channel l in {text, form (part of speech + word shape), position}, X^l_ij = MLP_l([h_i; h_j; h_i - h_j]);
P^t = softmax(W_t X^t); P^all = softmax(W_a [X^t; X^form; X^position]); P_final = softmax(P^all + lam * log(P^all /
P^t)).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from common.labels import IGNORE
from finetune.examples import Example, Span, Triple
from finetune.labels import ENTITY_TYPES, NONE_RELATION



def encode_joint(ex: Example, classes: list[str], n_words: int | None = None) -> torch.Tensor:
    """Gold entities and triples of `ex` -> (W, W) class ids (0 = none). A relation outside `classes` (one the
    training split lacks) has no class to learn: its cell stays none, and the scorer counts the triple as missed."""
    W = n_words or len(ex.tokens)
    index = {c: i for i, c in enumerate(classes)}
    grid = torch.zeros(W, W, dtype=torch.long)
    for e in ex.entities:
        if e.end <= W:
            grid[e.end - 1, e.start] = index[e.label]
    for t in ex.triples:
        if t.label in index and t.label != NONE_RELATION and t.head.end <= W and t.tail.end <= W:
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


def relation_types(classes: list[str], triples: list[Triple]) -> torch.Tensor:
    """(C, T, T) with 1 where `triples` (the training set's) hold relation class c between a head of entity type
    ENTITY_TYPES[a] and a tail of type ENTITY_TYPES[b], else 0 (rows of non-relation classes stay 0)."""
    index, types = {c: i for i, c in enumerate(classes)}, {t: i for i, t in enumerate(ENTITY_TYPES)}
    allowed = torch.zeros(len(classes), len(ENTITY_TYPES), len(ENTITY_TYPES))
    for t in triples:
        if t.label in index and t.head.label in types and t.tail.label in types:
            allowed[index[t.label], types[t.head.label], types[t.tail.label]] = 1.0
    return allowed


def decode_joint_typed(logp: torch.Tensor, margin: float, n_words: int, classes: list[str],
                       allowed: torch.Tensor) -> tuple[list, list]:
    """Entities and triples of one sentence with the entity types and relations chosen together.

    logp (W, W, C) the grid's log-probabilities, `margin` the `None` margin (calibration.py), `allowed` (C, T, T)
    from `relation_types`. The entity spans are those of `decode_joint`. Their types t and the pairs' relations r
    then maximise sum_e log p_e(t_e) + sum_(a,b) s_ab(t_a, t_b), where s_ab(t_a, t_b) is the best of "no triple"
    (log p(None) - margin, or an entity type in the pair's cell: what makes `decode_joint` emit no triple) and of
    log p_ab(r) over the relations r that the training set holds between types t_a and t_b. A triple whose types its
    relation never takes in training is never emitted, and a confident relation can re-type a doubtful entity
    (member_of makes its tail an ORG). Solved by coordinate ascent from each entity's own best type: every change
    raises the objective, so it stops. With every signature allowed it is `decode_joint` (up to exact ties)."""
    from finetune.calibration import decode

    lp = logp[:n_words, :n_words].float()
    pred = decode(lp, margin)
    entities, _ = decode_joint(pred, lp.gather(-1, pred[..., None]).squeeze(-1).exp(), n_words, classes)
    if not entities:
        return [], []
    n_types, k = 1 + len(ENTITY_TYPES), len(entities)
    starts = torch.tensor([e.start for e in entities])
    type_lp = lp[torch.tensor([e.end - 1 for e in entities]), starts, 1:n_types]  # (k, T)
    cell = lp[starts][:, starts]  # (k, k, C): the cell (start of a, start of b) holds a's relation to b
    no_triple = torch.maximum(cell[..., 0] - margin, cell[..., 1:n_types].amax(-1))  # (k, k)
    rel = cell[..., n_types:, None, None] + allowed[n_types:].log()  # (k, k, R, T, T); -inf where never seen
    best_rel, which = rel.max(2)  # (k, k, T, T)
    pair = torch.maximum(best_rel, no_triple[..., None, None])
    pair = pair.masked_fill(torch.eye(k, dtype=torch.bool)[..., None, None], 0.0)
    types, others = type_lp.argmax(-1).tolist(), torch.arange(k)
    changed = True
    while changed:
        changed = False
        for a in range(k):
            tb = torch.tensor(types)
            score = type_lp[a] + pair[a][others, :, tb].sum(0) + pair[:, a][others, tb, :].sum(0)  # (T,)
            t = int(score.argmax())
            if score[t] > score[types[a]] + 1e-6:
                types[a], changed = t, True
    typed = [Span(e.start, e.end, ENTITY_TYPES[t]) for e, t in zip(entities, types)]
    triples = []
    for a in range(k):
        for b in range(k):
            if a != b and best_rel[a, b, types[a], types[b]] > no_triple[a, b]:
                r = n_types + int(which[a, b, types[a], types[b]])
                triples.append(Triple(typed[a], typed[b], classes[r]))
    return typed, sorted(triples)


def pair_features(x: torch.Tensor) -> torch.Tensor:
    """(N, W, d) -> (N, W, W, 3d): [x_i; x_j; x_i - x_j] for every pair (the reference PairMLP factorises)."""
    W = x.shape[1]
    xi = x[:, :, None, :].expand(-1, -1, W, -1)
    xj = x[:, None, :, :].expand(-1, W, -1, -1)
    return torch.cat([xi, xj, xi - xj], -1)


class PairMLP(nn.Module):
    """GELU(Linear([x_i; x_j; x_i - x_j])) for every pair (i, j) or for chosen cells, without materialising the
    W x W x 3d pair tensor: with the weight split as [A | B | C], the linear map is (A + C) x_i + (B - C) x_j + b,
    so one projection per word and a broadcast sum replace a projection per pair (bench/wordpair.py). Dropout acts
    on the words before the projection (as W2NER's MLP drops its input), one mask per word: a mask over the
    W x W x H pair tensor cost a third of the grid head's step (bench/finetune_step.py)."""

    def __init__(self, d_in: int, hidden: int, dropout: float):
        super().__init__()
        self.linear = nn.Linear(3 * d_in, hidden)
        self.act, self.drop = nn.GELU(), nn.Dropout(dropout)

    def sides(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, c = self.linear.weight.split(x.shape[-1], dim=1)
        return x @ (a + c).T + self.linear.bias, x @ (b - c).T  # (N, W, H) each

    def forward(self, x: torch.Tensor, cells: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, W, d) -> (N, W, W, H); with cells (N, 2) of (i, j) -> (N, H) for those cells only."""
        left, right = self.sides(self.drop(x))
        if cells is None:
            z = left[:, :, None, :] + right[:, None, :, :]
        else:
            rows = torch.arange(x.shape[0], device=x.device)
            z = left[rows, cells[:, 0]] + right[rows, cells[:, 1]]
        return self.act(z)


class WordPairHead(nn.Module):
    def __init__(self, dim: int, n_classes: int, form_dim: int = 100, position_dim: int = 100,
                 max_words: int = 256, hidden: int = 512, lam: float = 1.0, dropout: float = 0.1):
        super().__init__()
        self.position_emb = nn.Embedding(max_words, position_dim)
        self.text = PairMLP(dim, hidden, dropout)
        self.form = PairMLP(form_dim, hidden // 4, dropout)
        self.position = PairMLP(position_dim, hidden // 4, dropout)
        self.out_text = nn.Linear(hidden, n_classes)
        self.out_all = nn.Linear(hidden + hidden // 2, n_classes)
        self.lam, self.max_words = lam, max_words

    def forward(self, words: torch.Tensor, form: torch.Tensor,
                cells: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """words (N, W, D), form (N, W, form_dim) -> log-probabilities "final" and "text": (N, W, W, C) over the
        whole grid, or (N, C) for the given cells (N, 2) (MRE reads one cell per post)."""
        W = words.shape[1]
        positions = torch.arange(W, device=words.device).clamp(max=self.max_words - 1)
        x_t = self.text(words, cells)  # (N, W, W, H) or (N, H)
        x_p = self.form(form, cells)
        x_x = self.position(self.position_emb(positions)[None].expand(words.shape[0], -1, -1), cells)
        log_p_t = F.log_softmax(self.out_text(x_t), -1)
        # out_all([x_t; x_p; x_x]) as a sum of three projections: no concatenated copy of the grid
        w_t, w_p, w_x = self.out_all.weight.split([x_t.shape[-1], x_p.shape[-1], x_x.shape[-1]], dim=1)
        log_p_all = F.log_softmax(x_t @ w_t.T + x_p @ w_p.T + x_x @ w_x.T + self.out_all.bias, -1)
        # P_final = softmax(P_all + lam * log(P_all / P_t)): keeps what the multimodal channels add to the text one
        final = F.log_softmax(log_p_all.exp() + self.lam * (log_p_all - log_p_t), -1)
        return {"final": final, "text": log_p_t}


def grid_loss(out: dict[str, torch.Tensor], labels: torch.Tensor, weight: torch.Tensor | None = None,
              text_channel: bool = True) -> torch.Tensor:
    """Masked NLL of the final distribution (Shap-CA's Eq. 18) and, with `text_channel` and when given, of the
    text-channel distribution P^t (mmie's extra term, head.text_channel_loss); labels (N, W, W) with IGNORE cells,
    or (N,) for the (N, C) outputs of chosen cells; `weight` (C,) re-weights the classes (a weighted mean)."""
    C = out["final"].shape[-1]
    keep = labels != IGNORE
    if not bool(keep.any()):
        return out["final"].sum() * 0.0
    y = labels[keep]
    terms = ("final", "text") if text_channel else ("final",)
    return sum(F.nll_loss(out[k].reshape(-1, C)[keep.reshape(-1)], y, weight=weight) for k in terms if k in out)
