"""MGIPS-CL's fusion (its Sec. 3.2-3.3): a mutual-attention encoder, the Multi-Granularity Interweave (MGI) of
image- and text-guided Multi-Granularity Excavators (MGE), and the pre-post adaptive gate. Shapes: N posts,
L text + context tokens, I image states ([cls; patches]), D the encoder width.

Mutual attention (Eq. 2-4), `fusion.mutual_layers` layers. Each stream has its own weights; its queries come from
itself and its keys/values are the other stream's keys/values of the layer before, followed by its own:
    K^t_{l+1} = [K^v_l, H^t_l W^k_{l+1}],  V^t_{l+1} = [V^v_l, H^t_l W^v_{l+1}]  (and the same with t <-> v)
at l = 0 the other stream's embeddings serve as its keys and values (Eq. 3). Eq. 2 prints Q^t_{l+1} = H^v_l W^q;
Eq. 3 (Q^t_1 = S^e W^q_1) and Eq. 4 show the queries are the stream's own, H^t_l W^q. Eq. 4 names only Attn; each
layer here is a post-norm transformer layer (attention, residual, LayerNorm; feed-forward, residual, LayerNorm),
as the encoders the paper builds on (BERT, CLIP) are. mmie's text encoder runs first without the image, so these
layers come after it, fresh, at the head learning rate; the paper's 12 mutual layers are its whole encoders.

MGE(A, B) (Eq. 5-9) gives A's rows a view of B ("image-guided" MGE(H^v, H^t): A = image, B = text):
    a = f2(Linear2(A)) (N, |A|, D),  b = f1(Linear1(B)) (N, |B|, D)
    M_im[i, j] = a_i * b_j                                  (Eq. 5: ⊙ of an |A|-row and a |B|-row matrix only
                                                             type-checks as this outer form, (N, |A|, |B|, D))
    S_C = M_im ⊗ M_3, S_F = M_im ⊗ M_4, M_3, M_4 in R^D      (Eq. 6: ⊗ with a (D, 1) vector -> (N, |A|, |B|);
                                                             computed as (a * M_3) b^T, M_im is never built)
    M_C = softmax(S_C, dim=-2)  row-grained: each B element spreads over A's rows
    M_F = softmax(S_F, dim=-1)  column-grained: each A row attends over B
    V_C = M_C b,  V_F = M_F b   (N, |A|, D)                   (Eq. 7: "M ⊙ f1(Linear1(H^t))" read as the matrix
                                                             product, the one that gives V in R^{rows x D})
    MGE(A, B) = f3(V_F + V_C)                                (Eq. 8)
f1, f2 are tanh (bounded, so the softmax scores stay in range), f3 a linear layer back to D (the residuals of
Eq. 10-11 need the output width to equal the input's). `fusion.granularity` row | column keeps one map only (the
paper's "w/o Column-grained" / "w/o Row-grained" ablations). Padded text tokens take no part in either softmax.

Interweave Encoder (Eq. 10-11), `fusion.interweave_layers` layers; all image-guided MGEs share one module, all
text-guided ones another; X_0 = H^v, T_0 = H^t (the mutual-attention outputs):
    X_l = X_{l-1} + MGE_img(X_{l-1}, T_{l-1}),   T_l = T_{l-1} + MGE_txt(T_{l-1}, X_l)
and one more image-guided MGE after the last layer (Sec. 3.3: "one more image-guided MGE than text-guided"; Fig. 3
numbers them 1 image, 2 text, 3 image): X_v = X_n + MGE_img(X_n, T_n), the visual features IPS-CL reads.

Pre-post adaptive gate (Eq. 12-13): I = sigma(W_1 T^t + W_2 H^t + b), z = I * H^t + (1 - I) * T^t -> the heads.
Returned: tokens z, and for IPS-CL/CL (Eq. 14-17, finetune/task.py) text_vec = mean of T^t over the post's own
tokens, image_vec = mean of X_v over the image states.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from finetune.fusions import masked_mean


class Stream(nn.Module):
    """One modality's weights in a mutual-attention layer."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop, self.heads = nn.Dropout(dropout), heads

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(N, S, D) -> (N, heads, S, D / heads)."""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, h: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                key_mask: torch.Tensor) -> torch.Tensor:
        """h (N, S, D) attends over keys/values (N, S', D), key_mask (N, S') True where a key is real."""
        att = F.scaled_dot_product_attention(self.split(self.q(h)), self.split(keys), self.split(values),
                                             attn_mask=key_mask[:, None, None, :])  # (N, heads, S, D / heads)
        h = self.norm1(h + self.drop(self.out(att.transpose(1, 2).flatten(2))))
        return self.norm2(h + self.drop(self.ffn(h)))


class MutualAttentionLayer(nn.Module):
    """Eq. 2-4: each stream's keys/values are [the other's previous keys/values; its own]."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.text, self.image = Stream(dim, heads, dropout), Stream(dim, heads, dropout)

    def forward(self, t: torch.Tensor, v: torch.Tensor, prev: dict, t_mask: torch.Tensor):
        """t (N, L, D), v (N, I, D); prev: the previous layer's {"kt", "vt", "kv", "vv"} (the embeddings at
        l = 0). Returns the new states and this layer's keys/values for the next layer."""
        mine = {"kt": self.text.k(t), "vt": self.text.v(t), "kv": self.image.k(v), "vv": self.image.v(v)}
        v_mask = t_mask.new_ones(v.shape[:2])
        t_new = self.text(t, torch.cat([prev["kv"], mine["kt"]], 1), torch.cat([prev["vv"], mine["vt"]], 1),
                          torch.cat([v_mask, t_mask], 1))
        v_new = self.image(v, torch.cat([prev["kt"], mine["kv"]], 1), torch.cat([prev["vt"], mine["vv"]], 1),
                           torch.cat([t_mask, v_mask], 1))
        return t_new, v_new, mine


class Excavator(nn.Module):
    """MGE(A, B), Eq. 5-9 (see the module docstring)."""

    def __init__(self, dim: int, granularity: str, dropout: float):
        super().__init__()
        self.lin_b, self.lin_a = nn.Linear(dim, dim), nn.Linear(dim, dim)  # Linear1 (on B), Linear2 (on A)
        self.m3, self.m4 = nn.Parameter(torch.empty(dim)), nn.Parameter(torch.empty(dim))
        nn.init.normal_(self.m3, std=1 / math.sqrt(dim))
        nn.init.normal_(self.m4, std=1 / math.sqrt(dim))
        self.f3, self.drop, self.granularity = nn.Linear(dim, dim), nn.Dropout(dropout), granularity

    def maps(self, a: torch.Tensor, b: torch.Tensor, a_mask: torch.Tensor, b_mask: torch.Tensor):
        """The row-grained M_C and column-grained M_F, each (N, |A|, |B|); masked entries are 0."""
        a, b = torch.tanh(self.lin_a(a)), torch.tanh(self.lin_b(b))
        pair = a_mask[:, :, None] & b_mask[:, None, :]  # (N, |A|, |B|)
        s_c = ((a * self.m3) @ b.transpose(1, 2)).masked_fill(~pair, -1e4)
        s_f = ((a * self.m4) @ b.transpose(1, 2)).masked_fill(~pair, -1e4)
        m_c = s_c.softmax(dim=-2) * pair  # a fully masked column or row gets weight 0, not 1 / |A|
        m_f = s_f.softmax(dim=-1) * pair
        return m_c, m_f, b

    def forward(self, a: torch.Tensor, b: torch.Tensor, a_mask: torch.Tensor, b_mask: torch.Tensor) -> torch.Tensor:
        m_c, m_f, b_enc = self.maps(a, b, a_mask, b_mask)
        v_c, v_f = m_c @ b_enc, m_f @ b_enc  # (N, |A|, D)
        mixed = {"both": v_c + v_f, "row": v_c, "column": v_f}[self.granularity]
        return self.drop(self.f3(mixed))


class MultiGranularityInterweave(nn.Module):
    def __init__(self, dim: int, cfg, dropout: float):
        super().__init__()
        self.mutual = nn.ModuleList(MutualAttentionLayer(dim, cfg.heads, dropout) for _ in range(cfg.mutual_layers))
        self.image_mge = Excavator(dim, cfg.granularity, dropout)  # shared by every image-guided MGE
        self.text_mge = Excavator(dim, cfg.granularity, dropout)  # shared by every text-guided MGE
        self.gate_post, self.gate_pre = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False)  # W_1 (+ b), W_2
        self.layers = cfg.interweave_layers

    def encode(self, t: torch.Tensor, v: torch.Tensor, t_mask: torch.Tensor):
        """The mutual-attention encoder: H^t (N, L, D), H^v (N, I, D)."""
        prev = {"kt": t, "vt": t, "kv": v, "vv": v}  # Eq. 3: layer 1 reads the other stream's embeddings
        for layer in self.mutual:
            t, v, prev = layer(t, v, prev, t_mask)
        return t, v

    def interweave(self, h_t: torch.Tensor, h_v: torch.Tensor, t_mask: torch.Tensor):
        """Eq. 10-11 plus the last image-guided MGE: T^t (N, L, D), X_v (N, I, D)."""
        v_mask = t_mask.new_ones(h_v.shape[:2])
        x, t = h_v, h_t
        for _ in range(self.layers):
            x = x + self.image_mge(x, t, v_mask, t_mask)
            t = t + self.text_mge(t, x, t_mask, v_mask)
        return t, x + self.image_mge(x, t, v_mask, t_mask)

    def gate(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        """Eq. 12-13: I = sigma(W_1 T^t + W_2 H^t + b) (N, L, D); z = I * H^t + (1 - I) * T^t."""
        i = torch.sigmoid(self.gate_post(post) + self.gate_pre(pre))
        return i * pre + (1 - i) * post

    def forward(self, tokens: torch.Tensor, image: torch.Tensor, masks: dict) -> dict[str, torch.Tensor]:
        t_mask = masks["attention"].bool()
        h_t, h_v = self.encode(tokens, image, t_mask)
        post, x_v = self.interweave(h_t, h_v, t_mask)
        return {"tokens": self.gate(h_t, post), "text_vec": masked_mean(post, masks["text"]),
                "image_vec": x_v.mean(1)}
