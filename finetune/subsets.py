"""Nested random subsets of a training split, for learning curves (finetune/curve.py) and low-resource runs.

The subset is drawn from `data.subset_seed`, never from `train.seed`: every training seed of a point on the curve
trains on the same posts, and only initialisation and shuffling vary."""
from __future__ import annotations

import random


def nested_subset(n: int, fraction: float, seed: int) -> list[int]:
    """Indices of round(fraction * n) of n items (at least one), in their original order: a prefix of one
    permutation drawn from `seed`, so the subset for a smaller fraction lies inside the subset for a larger one."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[:max(1, round(fraction * n))]) if n else []
