"""IMM's fusion (Implicit Modality Mining, its Sec. 3.2-3.3): a visual-text transformer (ISA) whose blocks share
LayerNorm and attention between the modalities but keep their own feed-forward layers, then Insert-Activation (IA)
blocks that insert, for each text token, the visual state it selects as extra key/value slots of the text FFN.
Shapes: N posts, L text + context tokens, I image states ([cls; patches]), D the width. Its natural vision side is
`model.vision: patch:<p>[:<dim>]` (a linear projection of raw patches, Eq. 2), with `model.fusion_layers: 0` so the
image states are the patch embeddings + position and type embeddings and the text states the text encoder's.

ISA block (Eq. 3-4), `fusion.isa_layers` of them, pre-norm over the joint sequence x = [h^t; h^v]:
    x = MHA(LN_1(x)) + x                                    one LN_1 and one MHA for both modalities
    h^t = T-FFN(LN_2(h^t)) + h^t,  h^v = V-FFN(LN_2(h^v)) + h^v   one LN_2, a feed-forward layer per modality
The SW loss (Eq. 5-14, finetune/task.py) reads the last ISA block's output: sentence level the text [CLS] and image
[cls] states (h^ts, h^vs of Eq. 7), word level the mean over the post's own tokens and over the patches (h^tw, h^vw
of Eq. 10: the paper names them "word-level" and gives no pooling; a per-post vector is what its batch-by-batch
softmax type-checks with).

IA block (Eq. 15-21), `fusion.ia_layers` of them, with separate pathways (Fig. 2): each modality has its own
pre-norm self-attention and its own FFN. The text FFN is read as key-value memory (Eq. 15), FFN(h) = f(h K^T) V,
and gets inserted slots:
    S = h^t (h^v)^T / sqrt(D)                       (Eq. 16; h^t, h^v the inputs of the two FFNs; the 1/sqrt(D)
                                                     of scaled dot-product attention is added: Eq. 16 has none)
    Agg_i = softmax(S_i) h^v                        (Eq. 17-18: the visual state token i selects)
    phi_k = W_k Agg_i, phi_v = W_v Agg_i            (Eq. 19-20, garbled in the paper: "projected ... for being
                                                     mapped to the corresponding vector space"; one (D -> s*D)
                                                     linear map each, s = `fusion.ia_slots`)
    FFN(h_i) = f(h_i [phi_k ; K]^T) [phi_v ; V]     (Eq. 21) = f(h_i K^T) V + sum_s f(h_i . phi_k,s) phi_v,s
f is GELU (the paper: "an activation like Leaky ReLU"; GELU is what the text encoder's own FFNs use). With
s = 0 the text FFN is a plain FFN. The returned tokens are the last IA block's text states after a final LN.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from finetune.fusions import masked_mean


def ffn(dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))


class SharedBlock(nn.Module):
    """ISA block, Eq. 3-4: LN_1, MHA and LN_2 shared by text and image; T-FFN and V-FFN their own."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn_t, self.ffn_v = ffn(dim, dropout), ffn(dim, dropout)

    def forward(self, t: torch.Tensor, v: torch.Tensor, t_mask: torch.Tensor):
        x = torch.cat([t, v], 1)  # (N, L + I, D)
        pad = ~torch.cat([t_mask, t_mask.new_ones(v.shape[:2])], 1)  # True where a key is padding
        y = self.norm1(x)
        x = x + self.attn(y, y, y, key_padding_mask=pad, need_weights=False)[0]
        t, v = x[:, :t.shape[1]], x[:, t.shape[1]:]
        return t + self.ffn_t(self.norm2(t)), v + self.ffn_v(self.norm2(v))


class InsertActivationFFN(nn.Module):
    """The text FFN of an IA block with `slots` visual key/value slots per token (Eq. 15-21)."""

    def __init__(self, dim: int, slots: int, dropout: float):
        super().__init__()
        self.key, self.value = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)  # K, V of Eq. 15
        self.slots, self.drop = slots, nn.Dropout(dropout)
        if slots:
            self.phi_k, self.phi_v = nn.Linear(dim, slots * dim), nn.Linear(dim, slots * dim)

    def forward(self, h_t: torch.Tensor, h_v: torch.Tensor) -> torch.Tensor:
        """h_t (N, L, D), h_v (N, I, D) -> (N, L, D)."""
        out = self.value(F.gelu(self.key(h_t)))  # f(h K^T) V
        if self.slots:
            agg = (h_t @ h_v.transpose(1, 2) / math.sqrt(h_t.shape[-1])).softmax(-1) @ h_v  # (N, L, D)
            k = self.phi_k(agg).unflatten(-1, (self.slots, -1))  # (N, L, s, D)
            v = self.phi_v(agg).unflatten(-1, (self.slots, -1))
            act = F.gelu((h_t[:, :, None] * k).sum(-1))  # (N, L, s): the inserted slots' activations
            out = out + (act[..., None] * v).sum(2)
        return self.drop(out)


class InsertActivationBlock(nn.Module):
    """IA block: separate text and visual pathways; the text FFN activates the visual slots."""

    def __init__(self, dim: int, heads: int, slots: int, dropout: float):
        super().__init__()
        self.norm_t1, self.norm_t2, self.norm_v1, self.norm_v2 = (nn.LayerNorm(dim) for _ in range(4))
        self.attn_t = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.attn_v = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn_t, self.ffn_v = InsertActivationFFN(dim, slots, dropout), ffn(dim, dropout)

    def forward(self, t: torch.Tensor, v: torch.Tensor, t_mask: torch.Tensor):
        y = self.norm_t1(t)
        t = t + self.attn_t(y, y, y, key_padding_mask=~t_mask, need_weights=False)[0]
        y = self.norm_v1(v)
        v = v + self.attn_v(y, y, y, need_weights=False)[0]
        y_t, y_v = self.norm_t2(t), self.norm_v2(v)  # the two FFNs' inputs (h^t, h^v of Eq. 16)
        return t + self.ffn_t(y_t, y_v), v + self.ffn_v(y_v)


class ImplicitModalityMining(nn.Module):
    def __init__(self, dim: int, cfg, dropout: float):
        super().__init__()
        self.isa = nn.ModuleList(SharedBlock(dim, cfg.heads, dropout) for _ in range(cfg.isa_layers))
        self.ia = nn.ModuleList(InsertActivationBlock(dim, cfg.heads, cfg.ia_slots, dropout)
                                for _ in range(cfg.ia_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, image: torch.Tensor, masks: dict) -> dict[str, torch.Tensor]:
        t_mask = masks["attention"].bool()
        t, v = tokens, image
        for block in self.isa:
            t, v = block(t, v, t_mask)
        sw = {"sent_t": t[:, 0], "sent_v": v[:, 0], "word_t": masked_mean(t, masks["text"]),
              "word_v": v[:, 1:].mean(1) if v.shape[1] > 1 else v[:, 0]}  # the SW loss's inputs (Eq. 7, 10)
        for block in self.ia:
            t, v = block(t, v, t_mask)
        return {"tokens": self.norm(t), "sw": sw}
