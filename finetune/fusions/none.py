"""No fusion after the encoder: the token states as the encoder left them (its fusion layers, if any, have already
let them attend to the image)."""
from __future__ import annotations

import torch
from torch import nn


class NoFusion(nn.Module):
    def __init__(self, dim: int, cfg, dropout: float):
        super().__init__()

    def forward(self, tokens: torch.Tensor, image: torch.Tensor, masks: dict) -> dict[str, torch.Tensor]:
        return {"tokens": tokens}
