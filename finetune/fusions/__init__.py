"""The fusion registry: `fusion.kind` -> the module that makes the encoder's token states image-aware.

Every fusion is one file here holding one nn.Module built as `Cls(dim, cfg: FusionConfig, dropout)` with

    forward(tokens (N, L, D), image (N, I, D), masks) -> {"tokens": (N, L, D), ["text_vec", "image_vec", "sw"]}

where tokens are the fused text + context token states, image the image states ([cls; patches]) and masks
{"attention": (N, L) text + context tokens, "text": (N, L) the post's own tokens, "ctx": (N, L) its context
tokens}. "text_vec"/"image_vec" (N, D), when given, are the fused sentence and image features the contrastive
terms (finetune/task.py) read instead of the encoder's pooled ones; "sw" the features IMM's SW loss reads.
A new fusion is one new file plus one line below.
"""
from __future__ import annotations

import importlib

import torch

FUSIONS = {
    "adaptive": "finetune.fusions.adaptive:AdaptiveFusion",
    "none": "finetune.fusions.none:NoFusion",
    "mgi": "finetune.fusions.mgi:MultiGranularityInterweave",
    "imm": "finetune.fusions.imm:ImplicitModalityMining",
}


def build_fusion(dim: int, cfg, dropout: float):
    """The fusion module `cfg.kind` (a FusionConfig) for token states of width `dim`."""
    module, name = FUSIONS[cfg.kind].split(":")
    return getattr(importlib.import_module(module), name)(dim, cfg, dropout)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (N, L, D) over the positions where mask (N, L) is set -> (N, D); zeros where none is."""
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)
