"""Shapley contrastive alignment, implicit positives and the CRF against brute force."""
import itertools
import math

import pytest
import torch

from finetune.contrastive import implicit_positive_loss, info_nce
from finetune.crf import CRF, bio_allowed
from finetune.shapley import (cyclic_permutations, exact_shapley_values, grand_utility, shapley_contrastive,
                              shapley_values)


def per_player_loop(sim: torch.Tensor, tau: float, perms: torch.Tensor) -> torch.Tensor:
    """The textbook estimator, one anchor, permutation and player at a time (the vectorised one must match)."""
    A, k = sim.shape
    phi = torch.zeros(A, k, dtype=torch.float64)
    for a in range(A):
        for perm in perms.tolist():
            prev = 0.0
            for m in range(k):
                members = perm[:m + 1]
                s = sim[a, members].double()
                u = float((torch.softmax(s / tau, 0) * s).sum())
                phi[a, perm[m]] += u - prev
                prev = u
    return phi / len(perms)


@pytest.mark.parametrize("k", [2, 3, 5, 8, 10])
def test_estimate_converges_to_exact_shapley(k):
    torch.manual_seed(k)
    sim = torch.randn(3, k, dtype=torch.float64).tanh()
    exact = exact_shapley_values(sim, 0.1)
    g = torch.Generator().manual_seed(0)
    est = torch.stack([shapley_values(sim, 0.1, generator=g) for _ in range(2000)]).mean(0)
    assert (est - exact).abs().max() < 0.02  # Monte-Carlo tolerance at 2000 x (log2 k + 1) permutations


@pytest.mark.parametrize("k", [2, 5, 16, 33])
def test_efficiency_holds_for_every_sampled_permutation_set(k):
    sim = torch.randn(4, k).tanh()
    phi = shapley_values(sim, 0.1)
    assert torch.allclose(phi.sum(-1), grand_utility(sim, 0.1), atol=1e-5)
    if k <= 10:
        assert torch.allclose(exact_shapley_values(sim, 0.1).sum(-1), grand_utility(sim, 0.1), atol=1e-5)


def test_vectorised_equals_per_player_loop():
    sim = torch.randn(5, 7).tanh()
    perms = cyclic_permutations(7, torch.Generator().manual_seed(3))
    assert perms.shape == (3, 7)  # one permutation and its cyclic shifts by 3 and 1 (k // 2, then halved)
    assert torch.allclose(shapley_values(sim, 0.2, perms).double(), per_player_loop(sim, 0.2, perms), atol=1e-5)


def test_shapley_loss_rewards_alignment_and_has_gradients():
    torch.manual_seed(0)
    a = torch.randn(8, 16, requires_grad=True)
    aligned = shapley_contrastive(a, a.detach() + 0.01 * torch.randn(8, 16))
    shuffled = shapley_contrastive(a, a.detach()[torch.randperm(8)])
    assert aligned < shuffled
    aligned.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()
    assert shapley_contrastive(a[:1], a[:1]).item() == 0.0  # one pair: nothing to contrast


def test_implicit_positives_known_answers():
    t = torch.randn(6, 8)
    v = torch.randn(6, 8)
    assert implicit_positive_loss(t, v, k=6).item() == pytest.approx(0.0, abs=1e-6)  # every image a positive
    t = torch.eye(4)
    one = implicit_positive_loss(t, t.clone(), k=1, tau=0.5)  # the top-1 is the pair itself
    logits = t @ t.T / 0.5
    assert one.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.arange(4)).item(), rel=1e-5)
    assert info_nce(t, t.clone(), 0.5).item() == pytest.approx(one.item(), rel=1e-5)


def test_crf_nll_and_viterbi_match_enumeration():
    torch.manual_seed(0)
    crf = CRF(3)
    em = torch.randn(3, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    tags = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 0], [1, 0, 0, 0]])
    logz = crf.log_partition(em, mask)
    brute_nll = []  # -log p(gold path) from the enumeration alone: logsumexp over every path - the gold path's score
    for b in range(3):
        n = int(mask[b].sum())
        scores = {}
        for path in itertools.product(range(3), repeat=n):
            full = torch.tensor(list(path) + [0] * (4 - n))[None]
            scores[path] = crf.score(em[b:b + 1], full, mask[b:b + 1]).item()
        assert logz[b].item() == pytest.approx(torch.logsumexp(torch.tensor(list(scores.values())), 0).item(),
                                               rel=1e-5)
        assert crf.decode(em[b:b + 1], mask[b:b + 1])[0] == list(max(scores, key=scores.get))
        gold = tuple(tags[b, :n].tolist())
        brute_nll.append(torch.logsumexp(torch.tensor(list(scores.values())), 0).item() - scores[gold])
    nll = crf.nll(em, tags, mask)
    assert nll.item() == pytest.approx(sum(brute_nll) / 3, rel=1e-5) and nll.item() > 0
    assert math.isfinite(nll.item())


def test_bio_constrained_crf_scores_and_decodes_only_valid_bio_paths():
    """head.bio_constraints: every invalid BIO path (I-X first, or after O / another type) gets no probability; the
    log partition is the enumeration's over the valid paths with the learned scores, and Viterbi finds the best
    valid path even where the emissions favour an invalid one."""
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    start_ok, trans_ok = bio_allowed(tags)
    assert start_ok.tolist() == [True, True, False, True, False]
    assert trans_ok[1, 2] and trans_ok[2, 2] and not trans_ok[0, 2] and not trans_ok[3, 2] and not trans_ok[4, 2]
    assert trans_ok[2, 0] and trans_ok[4, 1] and trans_ok[0, 3]  # O, B- after anything
    torch.manual_seed(0)
    crf = CRF(5, tags=tags)
    free = CRF(5)
    free.load_state_dict(crf.state_dict())  # the same learned scores, no constraints (the penalties are not saved)
    em = torch.randn(2, 4, 5)
    em[0, 0, 2] = em[1, 1, 4] = 20.0  # the emissions favour I-PER first and I-LOC after whatever comes first
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)

    def valid(path):
        return start_ok[path[0]] and all(trans_ok[a, b] for a, b in zip(path, path[1:]))

    for b in range(2):
        n = int(mask[b].sum())
        scores = {p: free.score(em[b:b + 1], torch.tensor(list(p) + [0] * (4 - n))[None], mask[b:b + 1]).item()
                  for p in itertools.product(range(5), repeat=n)}
        ok = {p: v for p, v in scores.items() if valid(p)}
        assert len(ok) < len(scores)
        assert crf.log_partition(em[b:b + 1], mask[b:b + 1]).item() == pytest.approx(
            torch.logsumexp(torch.tensor(list(ok.values())), 0).item(), rel=1e-5)
        best = list(max(ok, key=ok.get))
        assert crf.decode(em[b:b + 1], mask[b:b + 1])[0] == best
        assert free.decode(em[b:b + 1], mask[b:b + 1])[0] != best  # unconstrained, the invalid path wins
    gold = torch.tensor([[1, 2, 0, 3], [0, 3, 4, 0]])  # valid paths: a finite NLL of the usual size
    assert 0 < crf.nll(em, gold, mask).item() < 100
