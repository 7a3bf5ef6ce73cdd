"""Linear-chain CRF: forward algorithm (log partition) and Viterbi, vectorised over batch and tags; the only
loop is over time. emissions (B, T, C), tags (B, T), mask (B, T) bool with mask[:, 0] all true (left-aligned).
With the tag names given (`CRF(C, tags=[...])`, head.bio_constraints), paths that are not valid BIO get no
probability: an I-X tag only after B-X or I-X, never first."""
from __future__ import annotations

import torch
from torch import nn

FORBIDDEN = -1e4  # added to a forbidden start or transition score: exp() of it is 0 in fp32, and no inf/NaN


def bio_allowed(tags: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(start (C,), transitions (C, C) [from, to]) booleans of what valid BIO allows: I-X first, or after anything
    but B-X / I-X, is forbidden; a tag outside O / B-* / I-* is unconstrained."""
    def kind(tag: str) -> tuple[str, str]:
        prefix, _, etype = tag.partition("-")
        return (prefix, etype) if prefix in ("B", "I") and etype else ("", "")

    kinds = [kind(t) for t in tags]
    start = torch.tensor([k[0] != "I" for k in kinds])
    trans = torch.tensor([[k_to[0] != "I" or (k_from[0] in ("B", "I") and k_from[1] == k_to[1])
                           for k_to in kinds] for k_from in kinds])
    return start, trans


class CRF(nn.Module):
    def __init__(self, num_tags: int, tags: list[str] | None = None):
        super().__init__()
        self.num_tags = num_tags
        self.start = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.trans = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))  # [from, to]
        self.constrained = tags is not None
        if tags is not None:  # not saved: rebuilt from the tag names, so a saved model loads either way
            if len(tags) != num_tags:
                raise ValueError(f"CRF: {len(tags)} tag names for {num_tags} tags")
            start, trans = bio_allowed(tags)
            self.register_buffer("start_penalty", (~start).float() * FORBIDDEN, persistent=False)
            self.register_buffer("trans_penalty", (~trans).float() * FORBIDDEN, persistent=False)

    def scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The start and transition scores the paths are scored with (the learned ones, plus the BIO penalties)."""
        if not self.constrained:
            return self.start, self.trans
        return self.start + self.start_penalty, self.trans + self.trans_penalty

    def score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unnormalised score of the given tag paths (B,)."""
        B, T, _ = emissions.shape
        m = mask.to(emissions.dtype)
        start, trans_all = self.scores()
        emit = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)  # (B, T)
        trans = trans_all[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        last = tags.gather(1, (mask.sum(1, keepdim=True) - 1).clamp(min=0)).squeeze(1)  # (B,)
        return start[tags[:, 0]] + (emit * m).sum(1) + (trans * m[:, 1:]).sum(1) + self.end[last]

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log sum over all paths of exp(score) (B,)."""
        start, trans = self.scores()
        alpha = start + emissions[:, 0]  # (B, C)
        for t in range(1, emissions.shape[1]):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans + emissions[:, t].unsqueeze(1), dim=1)  # (B, C)
            alpha = torch.where(mask[:, t:t + 1], nxt, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood over the batch."""
        return (self.log_partition(emissions, mask) - self.score(emissions, tags, mask)).mean()

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Viterbi: the arg-max path of each sequence, cut to its length."""
        B, T, C = emissions.shape
        start, trans = self.scores()
        score = start + emissions[:, 0]  # (B, C)
        back = []
        for t in range(1, T):
            cand = score.unsqueeze(2) + trans  # (B, from, to)
            best, idx = cand.max(dim=1)  # (B, C)
            nxt = best + emissions[:, t]
            keep = mask[:, t:t + 1]
            score = torch.where(keep, nxt, score)
            back.append(torch.where(keep, idx, torch.arange(C, device=idx.device).expand(B, C)))
        score = score + self.end
        last = score.argmax(1)  # (B,)
        path = [last]
        for idx in reversed(back):
            last = idx.gather(1, last.unsqueeze(1)).squeeze(1)
            path.append(last)
        path = torch.stack(path[::-1], 1)  # (B, T)
        lengths = mask.sum(1).tolist()
        return [p[:n] for p, n in zip(path.tolist(), lengths)]
