"""Optimisation shared by the trainers: parameter groups (a learning rate per named group, one no-decay rule),
AdamW (fused where torch has a fused kernel) and the warm-up + cosine learning-rate factor."""
from __future__ import annotations

import math

import torch


def no_decay(name: str, p: torch.Tensor) -> bool:
    """Norm weights, biases and scalars (e.g. a learned temperature) take no weight decay."""
    return p.ndim < 2 or "norm" in name.lower()


def param_groups(model: torch.nn.Module, group_of, lrs: dict[str, float], weight_decay: float) -> list[dict]:
    """AdamW groups of the trainable parameters: `group_of(name)` names each one's group, `lrs` gives the group's
    learning rate; each group splits into a decayed part and a no_decay() part ("<group>" and "<group>/no_decay";
    empty parts are left out). Groups come in the order their first parameter appears in the model."""
    groups: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((group_of(name), no_decay(name, p)), []).append(p)
    return [{"params": ps, "lr": lrs[g], "weight_decay": 0.0 if nd else weight_decay,
             "name": g + ("/no_decay" if nd else "")} for (g, nd), ps in groups.items()]


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
