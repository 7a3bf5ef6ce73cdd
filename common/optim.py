"""Optimisation shared by the trainers: AdamW (fused where torch has a fused kernel) and the warm-up + cosine
learning-rate factor."""
from __future__ import annotations

import math

import torch


def adamw(groups, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over parameter groups. The fused kernel updates every tensor in one call: on a 2-core CPU one step over
    MiniLM-L6's 22.6M parameters takes 15 ms against 79 ms for torch's per-tensor loop and 72 ms for foreach
    (bench/finetune_step.py, "adamw_ms_text_encoder"). Parameters without a gradient are skipped, as in the loop."""
    groups = list(groups)
    params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)


def warmup_cosine(warmup: int, total: int):
    """LambdaLR factor: linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f
