"""Fine-tuning's loss: named terms and their weights (the model, finetune/model.py, keeps features, heads and
decoding). total = main + alpha * semantic + beta * modality + ips_weight * ips + sw_weight * sw, where

    main_loss      the task's own: CRF NLL (MNER), the marked pair's NLL (MRE), the grid's (MJERE)
    semantic_loss  Shap-CA's context <-> text alignment (align.method shapley | infonce; 0 with none)
    modality_loss  Shap-CA's context <-> image alignment
    ips_loss       MGIPS-CL's implicit positives (Eq. 16) + its standard text <-> image CL (Eq. 17), at one weight
                   as the paper's 1:1 (Eq. 19); on the fusion's fused sentence/image features when it gives them
                   (mgi), else on the encoder's pooled text and image [cls]
    sw_loss        IMM's semantic-wise loss (Eq. 5-14), weight gamma = align.sw_weight (Eq. 25-26), with the imm
                   fusion and a teacher's embeddings of each training post (finetune/teacher_signal.py):
                   P_ij = max(0, cos(T_c,i, V_c,j)) (Eq. 5), q = P row-normalised (Eq. 8), p = softmax_j of the
                   model's cos(h^t_i, h^v_j) / align.tau (Eq. 7, 10 print the raw dot product h^t_i . h^v_j;
                   cosine over a temperature keeps the logits in +-1/tau whatever the scale of ISA's unnormalised
                   residual states), each KL(p || q)
                   (Eq. 6, 9) text-to-image and image-to-text (q of the latter from P^T), averaged (Eq. 12-13);
                   L_SW = sw_sentence * L_S + sw_word * L_W (Eq. 14). A row whose P is all zero (the teacher sees no
                   image matching that text) has no target distribution and is left out. Where P_ij = 0 and p_ij is
                   not, KL(p || q) charges log(p_ij / eps) (Eq. 6's eps = 1e-8): with the label-bridge teacher
                   (6% of a synthetic batch's pairs at 0) L_SW starts near 4 nats.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from finetune.config import FinetuneConfig
from finetune.contrastive import implicit_positive_contrastive, info_nce
from finetune.shapley import shapley_contrastive

TERMS = ("main_loss", "semantic_loss", "modality_loss", "ips_loss", "sw_loss")


def weights(cfg: FinetuneConfig) -> dict[str, float]:
    a = cfg.align
    return {"main_loss": 1.0, "semantic_loss": a.alpha, "modality_loss": a.beta, "ips_loss": a.ips_weight,
            "sw_loss": a.sw_weight}


def kl_to_signal(logits: torch.Tensor, P: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """mean over rows i (with some P_i > 0) of sum_j p_ij log(p_ij / (q_ij + eps)), p = softmax(logits) and
    q = P / sum_j P (IMM Eq. 6-8). logits, P: (B, B)."""
    rows = P.sum(1) > 0
    if not bool(rows.any()):
        return logits.sum() * 0.0
    logp = logits[rows].log_softmax(-1)
    q = P[rows] / P[rows].sum(1, keepdim=True)
    return (logp.exp() * (logp - torch.log(q + eps))).sum(1).mean()


def sw_loss(sw: dict, teacher: torch.Tensor, sentence: float, word: float, tau: float) -> torch.Tensor:
    """IMM's L_SW from the fusion's features `sw` and the teacher embeddings (B, 2, Dt) [text, image]."""
    t_c, v_c = F.normalize(teacher[:, 0], dim=-1), F.normalize(teacher[:, 1], dim=-1)
    P = (t_c @ v_c.T).clamp(min=0.0)  # Eq. 5, (B, B): text i vs image j
    out = []
    for t, v in ((sw["sent_t"], sw["sent_v"]), (sw["word_t"], sw["word_v"])):
        logits = F.normalize(t, dim=-1) @ F.normalize(v, dim=-1).T / tau  # (B, B)
        out.append(0.5 * (kl_to_signal(logits, P) + kl_to_signal(logits.T, P.T)))  # Eq. 12-13
    return sentence * out[0] + word * out[1]


def align_losses(model, f: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The alignment terms from the model's features `f` (Extractor.features) through its projections."""
    a = model.cfg.align
    out: dict[str, torch.Tensor] = {}
    t, c, v = model.align_t(f["x_t"]), model.align_c(f["x_c"]), model.align_v(f["x_v"])
    ctx = f["has_ctx"]
    if a.method == "shapley" and int(ctx.sum()) >= 2:
        out["semantic_loss"] = shapley_contrastive(c[ctx], t[ctx], a.tau, generator)
        out["modality_loss"] = shapley_contrastive(c[ctx], v[ctx], a.tau, generator)
    elif a.method == "infonce" and int(ctx.sum()) >= 2:
        out["semantic_loss"] = info_nce(c[ctx], t[ctx], a.tau)
        out["modality_loss"] = info_nce(c[ctx], v[ctx], a.tau)
    else:
        out["semantic_loss"] = out["modality_loss"] = (c.sum() + t.sum() + v.sum()) * 0.0
    if "ips_t" in f:  # the fusion's own sentence/image features, through the same projections (Eq. 14's f, g)
        t, v = model.align_t(f["ips_t"]), model.align_v(f["ips_v"])
    out["ips_loss"] = implicit_positive_contrastive(t, v, a.k, a.tau)
    return out


def losses(model, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Every term by name, and their weighted sum as "loss"."""
    f = model.features(batch)
    out = {"main_loss": model.main_loss(f, batch), **align_losses(model, f, generator)}
    a = model.cfg.align
    if a.sw_weight > 0 and "sw" in f and "teacher" in batch and f["sw"]["sent_t"].shape[0] >= 2:
        out["sw_loss"] = sw_loss(f["sw"], batch["teacher"], a.sw_sentence, a.sw_word, a.tau)
    else:
        out["sw_loss"] = out["main_loss"] * 0.0
    w = weights(model.cfg)
    out["loss"] = sum(w[k] * out[k] for k in TERMS)
    return out
