"""Benchmark: the Shapley contrastive loss vs InfoNCE at k = 16/32/64 (forward + backward), and the vectorised
Shapley estimator vs a per-player Python loop over the same permutations. Last line: one JSON object.

    python bench/align.py [--dim 256] [--repeats 10]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from timing import best_of  # noqa: E402

from finetune.contrastive import info_nce  # noqa: E402
from finetune.shapley import cyclic_permutations, shapley_contrastive, shapley_values  # noqa: E402


def loop_estimator(sim: torch.Tensor, tau: float, perms: torch.Tensor) -> torch.Tensor:
    """One anchor, permutation and player at a time: each coalition's utility recomputed from scratch."""
    A, k = sim.shape
    phi = torch.zeros(A, k)
    for a in range(A):
        for perm in perms.tolist():
            prev = 0.0
            for m in range(k):
                s = sim[a, perm[:m + 1]]
                u = float((torch.softmax(s / tau, 0) * s).sum())
                phi[a, perm[m]] += u - prev
                prev = u
    return phi / len(perms)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args()
    torch.manual_seed(0)
    result = {}
    for k in (16, 32, 64):
        x = torch.randn(k, a.dim, requires_grad=True)
        y = torch.randn(k, a.dim, requires_grad=True)

        def shap():
            shapley_contrastive(x, y, 0.1).backward()

        def nce():
            info_nce(x, y, 0.1).backward()

        t_s, t_n = best_of(shap, a.repeats), best_of(nce, a.repeats)
        sim = torch.randn(k, k).tanh()
        perms = cyclic_permutations(k, torch.Generator().manual_seed(0))
        t_vec = best_of(lambda: shapley_values(sim, 0.1, perms), a.repeats)
        t_loop = best_of(lambda: loop_estimator(sim, 0.1, perms), 1)
        assert torch.allclose(shapley_values(sim, 0.1, perms), loop_estimator(sim, 0.1, perms), atol=1e-4)
        result[f"k{k}"] = {"shapley_ms": round(1000 * t_s, 3), "infonce_ms": round(1000 * t_n, 3),
                           "shapley_vs_infonce": round(t_s / t_n, 2), "vectorised_ms": round(1000 * t_vec, 3),
                           "loop_ms": round(1000 * t_loop, 1), "vectorised_speedup": round(t_loop / t_vec, 1)}
        r = result[f"k{k}"]
        print(f"k={k}: Shapley loss {r['shapley_ms']} ms = {r['shapley_vs_infonce']}x InfoNCE ({r['infonce_ms']} ms); "
              f"estimator vectorised {r['vectorised_ms']} ms vs per-player loop {r['loop_ms']} ms -> "
              f"{r['vectorised_speedup']}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
