"""PROMU's pretraining heads (used only here; fine-tuning starts from the encoder alone)."""
from __future__ import annotations

import math

import torch
from torch import nn

from pretrain.config import LossConfig


class PromuHeads(nn.Module):
    def __init__(self, dim: int, n_entities: int, n_relations: int, cfg: LossConfig):
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

    @property
    def inv_tau(self) -> torch.Tensor:
        return self.log_inv_tau.clamp(max=math.log(100.0)).exp()[0]
