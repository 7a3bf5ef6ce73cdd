"""Shared by the benchmarks: best-of-N wall time after a warm-up call (the minimum is the least noisy estimate on a
shared machine)."""
from __future__ import annotations

import time


def best_of(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
