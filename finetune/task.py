"""Fine-tuning's loss: named terms and their weights (the model, finetune/model.py, keeps features, heads and
decoding). total = main + alpha * semantic + beta * modality + ips_weight * ips, where

    main_loss      the task's own: CRF NLL (MNER), the marked pair's NLL (MRE), the grid's (MJERE)
    semantic_loss  Shap-CA's context <-> text alignment (align.method shapley | infonce; 0 with none)
    modality_loss  Shap-CA's context <-> image alignment
    ips_loss       MGIPS-CL's implicit positives (Eq. 16) + its standard text <-> image CL (Eq. 17), at one weight
                   as the paper's 1:1 (Eq. 19); on the fusion's fused sentence/image features when it gives them
                   (mgi), else on the encoder's pooled text and image [cls]
"""
from __future__ import annotations

import torch

from finetune.config import FinetuneConfig
from finetune.contrastive import implicit_positive_contrastive, info_nce
from finetune.shapley import shapley_contrastive

TERMS = ("main_loss", "semantic_loss", "modality_loss", "ips_loss")


def weights(cfg: FinetuneConfig) -> dict[str, float]:
    a = cfg.align
    return {"main_loss": 1.0, "semantic_loss": a.alpha, "modality_loss": a.beta, "ips_loss": a.ips_weight}


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
    w = weights(model.cfg)
    out["loss"] = sum(w[k] * out[k] for k in TERMS)
    return out
