"""Linear-chain CRF: forward algorithm (log partition) and Viterbi, vectorised over batch and tags; the only
loop is over time. emissions (B, T, C), tags (B, T), mask (B, T) bool with mask[:, 0] all true (left-aligned)."""
from __future__ import annotations

import torch
from torch import nn


class CRF(nn.Module):
    def __init__(self, num_tags: int):
        super().__init__()
        self.num_tags = num_tags
        self.start = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.trans = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))  # [from, to]

    def score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unnormalised score of the given tag paths (B,)."""
        B, T, _ = emissions.shape
        m = mask.to(emissions.dtype)
        emit = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)  # (B, T)
        trans = self.trans[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        last = tags.gather(1, (mask.sum(1, keepdim=True) - 1).clamp(min=0)).squeeze(1)  # (B,)
        return self.start[tags[:, 0]] + (emit * m).sum(1) + (trans * m[:, 1:]).sum(1) + self.end[last]

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log sum over all paths of exp(score) (B,)."""
        alpha = self.start + emissions[:, 0]  # (B, C)
        for t in range(1, emissions.shape[1]):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + self.trans + emissions[:, t].unsqueeze(1), dim=1)  # (B, C)
            alpha = torch.where(mask[:, t:t + 1], nxt, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood over the batch."""
        return (self.log_partition(emissions, mask) - self.score(emissions, tags, mask)).mean()

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Viterbi: the arg-max path of each sequence, cut to its length."""
        B, T, C = emissions.shape
        score = self.start + emissions[:, 0]  # (B, C)
        back = []
        for t in range(1, T):
            cand = score.unsqueeze(2) + self.trans  # (B, from, to)
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
