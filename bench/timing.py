"""Shared by the benchmarks: best-of-N wall time after a warm-up call (the minimum is the least noisy estimate on a
shared machine), and the median of N (what a typical call costs, as a latency)."""
from __future__ import annotations

import statistics
import time


def best_of(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def median_ms(fn, repeats: int = 30, warmup: int = 3) -> float:
    """Median wall time of `repeats` calls after `warmup` calls, in milliseconds (2 decimals)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 2)
