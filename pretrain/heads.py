"""PROMU's pretraining heads, and the optional MLM head (used only here; fine-tuning starts from the encoder
alone)."""
from __future__ import annotations

import math

import torch
from torch import nn

from pretrain.config import LossConfig


class PromuHeads(nn.Module):
    def __init__(self, dim: int, n_entities: int, n_relations: int, cfg: LossConfig,
                 word_embeddings: torch.Tensor):
        super().__init__()
        self.itm = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))
        self.proj_t = nn.Linear(dim, cfg.proj_dim)
        self.proj_v = nn.Linear(dim, cfg.proj_dim)
        self.fc_ent = nn.Linear(dim, n_entities)
        self.fc_rel = nn.Linear(dim, n_relations)
        log_inv_tau = torch.tensor([math.log(1.0 / cfg.tau)])  # (1,): DeepSpeed cannot broadcast 0-d params
        if cfg.learn_tau:
            self.log_inv_tau = nn.Parameter(log_inv_tau)
        else:
            self.register_buffer("log_inv_tau", log_inv_tau)

        self.mlm = MlmHead(dim, word_embeddings) if cfg.mlm > 0 else None  # word_embeddings: (V, dim)

    @property
    def inv_tau(self) -> torch.Tensor:
        return self.log_inv_tau.clamp(max=math.log(100.0)).exp()[0]


class MlmHead(nn.Module):
    """BERT's prediction head: dense + GELU + LayerNorm, then a decoder over the vocabulary that starts as a copy of
    the text encoder's word embeddings (untied, so ZeRO-3 can partition it like any other weight)."""

    def __init__(self, dim: int, word_embeddings: torch.Tensor):
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.decoder = nn.Linear(dim, word_embeddings.shape[0])
        with torch.no_grad():
            self.decoder.weight.copy_(word_embeddings)
            self.decoder.bias.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(h))
