"""Benchmark: the word-pair MLP factorised (one projection per word, broadcast sum) vs materialising every pair
[x_i; x_j; x_i - x_j] and projecting it (the textbook form), forward+backward on the same weights, side by side
in one run; also checks both give the same output. Last line: one JSON object.

    python bench/wordpair.py [--batch 16] [--words 40] [--dim 384] [--hidden 512] [--repeats 10]
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

from finetune.wordpair import PairMLP, pair_features  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--words", type=int, default=40)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args()
    torch.manual_seed(0)
    mlp = PairMLP(a.dim, a.hidden, dropout=0.0)
    x = torch.randn(a.batch, a.words, a.dim, requires_grad=True)

    def materialised():
        return mlp.act(mlp.linear(pair_features(x)))

    with torch.no_grad():
        max_diff = (mlp(x) - materialised()).abs().max().item()

    def fb(fn):
        def run():
            x.grad = None
            mlp.zero_grad()
            fn().sum().backward()
        return run

    t = {"factorised": best_of(fb(lambda: mlp(x)), a.repeats), "materialised": best_of(fb(materialised), a.repeats)}
    result = {"batch": a.batch, "words": a.words, "dim": a.dim, "hidden": a.hidden, "max_abs_diff": max_diff,
              **{f"{k}_fwd_bwd_ms": round(1000 * v, 2) for k, v in t.items()},
              "speedup": round(t["materialised"] / t["factorised"], 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
