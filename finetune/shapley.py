"""Shapley-value contrastive alignment (Shap-CA).

For anchor j (a text) the players are the k items of the other side (contexts) in the batch. A coalition S has
utility u_j(S) = sum_{i in S} p_i * sim(a_j, b_i), p = softmax over S of sim / tau (cosine similarities).

The cyclic Monte-Carlo estimator draws one random permutation and then visits its cyclic shifts by k/2, k/4, ...,
1: log2(k) + 1 permutations, each an unbiased sample of the Shapley value. Along one permutation every prefix
coalition's utility comes from two cumulative sums (sum e^{s/tau} s and sum e^{s/tau}, stabilised by the row
max), so the marginal contributions of all players for all anchors cost O(k^2) per permutation, vectorised.
Each permutation's values sum to u_j(all players) exactly (efficiency), hence

    L = -(1/k) sum_j [phi_j(u_j) - sum_{i != j} phi_i(u_j)] = -(1/k) sum_j [2 phi_jj - u_j(K)].
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def cyclic_permutations(k: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(R, k) player orders: a random permutation and its cyclic shifts by k/2, k/4, ..., 1 (R = log2(k) + 1)."""
    perm = torch.randperm(k, generator=generator).to(device)
    perms = [perm]
    stride = k // 2
    while stride > 0:
        perm = torch.roll(perm, shifts=stride)
        perms.append(perm)
        stride //= 2
    return torch.stack(perms)


def prefix_utilities(sim: torch.Tensor, perms: torch.Tensor, tau: float) -> torch.Tensor:
    """sim (A, k) anchor-player similarities, perms (R, k) -> u (R, A, k): utility of each prefix coalition
    (the first m + 1 players of each permutation), from two cumulative sums."""
    s = sim[:, perms].permute(1, 0, 2)  # (R, A, k) similarities in permutation order
    z = s / tau
    w = torch.exp(z - z.max(dim=-1, keepdim=True).values)  # (R, A, k), stabilised; the max cancels in the ratio
    return torch.cumsum(w * s, -1) / torch.cumsum(w, -1)


def shapley_values(sim: torch.Tensor, tau: float, perms: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """sim (A, k) -> phi (A, k): the players' Shapley values for each anchor, averaged over the cyclic perms."""
    A, k = sim.shape
    if perms is None:
        perms = cyclic_permutations(k, generator, sim.device)
    u = prefix_utilities(sim, perms, tau)  # (R, A, k)
    marginal = u - F.pad(u, (1, 0))[..., :-1]  # (R, A, k): u(prefix_m) - u(prefix_{m-1}), u(empty) = 0
    phi = torch.zeros(perms.shape[0], A, k, dtype=sim.dtype, device=sim.device)
    phi.scatter_(2, perms[:, None, :].expand(-1, A, -1), marginal)  # back to player index
    return phi.mean(0)


def grand_utility(sim: torch.Tensor, tau: float) -> torch.Tensor:
    """u_j(all players) (A,)."""
    return (torch.softmax(sim / tau, -1) * sim).sum(-1)


def exact_shapley_values(sim: torch.Tensor, tau: float) -> torch.Tensor:
    """Brute force over all 2^k coalitions (tests; k <= 12): phi (A, k)."""
    A, k = sim.shape
    if k > 12:
        raise ValueError("exact enumeration is for k <= 12")
    masks = torch.tensor([[(m >> i) & 1 for i in range(k)] for m in range(2 ** k)], dtype=torch.bool)  # (2^k, k)
    z = (sim / tau)[:, None, :].expand(A, 2 ** k, k)
    w = torch.where(masks[None], torch.softmax(z.masked_fill(~masks[None], -math.inf), -1), 0.0)
    u = torch.nan_to_num((w * sim[:, None, :]).sum(-1))  # (A, 2^k); the empty coalition has utility 0
    size = masks.sum(-1)  # (2^k,)
    weight = torch.tensor([math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) if s < k else 0.0
                           for s in size.tolist()], dtype=sim.dtype)
    phi = torch.zeros(A, k, dtype=sim.dtype)
    idx = torch.arange(2 ** k)
    for i in range(k):
        without = ~masks[:, i]
        with_i = idx[without] | (1 << i)
        phi[:, i] = ((u[:, with_i] - u[:, idx[without]]) * weight[idx[without]]).sum(-1)
    return phi


def shapley_contrastive(a: torch.Tensor, b: torch.Tensor, tau: float = 0.1,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Symmetric Shapley contrastive loss between paired rows of a (k, d) and b (k, d)."""
    k = a.shape[0]
    if k < 2:
        return (a.sum() + b.sum()) * 0.0
    sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # (k, k): anchors a_j, players b_i

    def one_side(s: torch.Tensor) -> torch.Tensor:
        phi = shapley_values(s, tau, generator=generator)
        return -(2 * phi.diagonal() - grand_utility(s, tau)).mean()

    return 0.5 * (one_side(sim) + one_side(sim.T))
