"""The pretraining task: FusionEncoder features -> PROMU heads -> the four losses, lambda-weighted, plus (unless
`loss.mlm=0`) an image-grounded MLM term: the masked captions of matched pairs go through the text encoder and the
fusion layers with their image, and the fused states at the masked positions predict the tokens. PROMU's four
losses read only [CLS] and patch states; without a token-level term the text states that fine-tuning tags drift
(README, "pretrained init")."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from common.fusion import FusionEncoder
from common.labels import IGNORE
from common.optim import param_groups
from pretrain.config import LossConfig
from pretrain.heads import PromuHeads
from pretrain.losses import box_features, cir_loss, cit_loss, coe_loss, itm_loss, mlm_loss

TERMS = ("itm", "cit", "coe", "cir")  # PROMU's four; "mlm" joins them when loss.mlm > 0 (the default)
COUNTS = ("itm_correct", "pairs", "r1_hits", "matched")


class PromuTask(nn.Module):
    def __init__(self, encoder: FusionEncoder, n_entities: int, n_relations: int, cfg: LossConfig):
        super().__init__()
        self.encoder = encoder
        self.heads = PromuHeads(encoder.dim, n_entities, n_relations, cfg,
                                encoder.text.model.get_input_embeddings().weight.detach())
        self.terms = TERMS + (("mlm",) if self.heads.mlm is not None else ())
        self.counts = COUNTS + (("mlm_correct", "mlm_masked") if self.heads.mlm is not None else ())
        self.weights = {t: getattr(cfg, t) for t in self.terms}

    def param_groups(self, lr: float, encoder_lr: float, weight_decay: float) -> list[dict]:
        """Pretrained weights (FusionEncoder.pretrained_prefixes) train at `encoder_lr`, everything new at `lr`; no
        decay on norms and biases."""
        prefixes = self.encoder.pretrained_prefixes(under="encoder.")
        return param_groups(self, lambda name: "encoder" if name.startswith(prefixes) else "rest",
                            {"encoder": encoder_lr, "rest": lr}, weight_decay)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        f = self.encoder(batch["input_ids"], batch["attention_mask"], batch["image"])
        h = self.heads
        itm_logits = h.itm(f["fused_cls"]).squeeze(-1)  # (B,)
        t, v = h.proj_t(f["text_cls"]), h.proj_v(f["image_cls"])  # (B, d)
        ent_logits = h.fc_ent(box_features(f["fused_patches"], batch["box_mask"]))  # (B, NB, E)
        rel_logits = h.fc_rel(f["fused_cls"])  # (B, R)
        match = batch["match"].to(itm_logits.dtype)
        out = {
            "itm_loss": itm_loss(itm_logits, match),
            "cit_loss": cit_loss(t, v, match, h.inv_tau),
            "coe_loss": coe_loss(ent_logits, batch["ent_target"].to(ent_logits.dtype), batch["box_valid"]),
            "cir_loss": cir_loss(rel_logits, batch["rel_target"].to(rel_logits.dtype)),
        }
        if h.mlm is not None:
            out.update(self.mlm(batch, f))
        out["loss"] = sum(self.weights[k] * out[f"{k}_loss"] for k in self.terms)
        with torch.no_grad():
            out.update(retrieval_counts(itm_logits, match, t, v))
            out["tau"] = 1.0 / h.inv_tau.detach()
        return out

    def mlm(self, batch: dict, f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Second text + fusion pass over the masked captions of the rows that have masks, with their images'
        features from the first pass. A batch without masks gives a zero that keeps the graph."""
        labels = batch["mlm_labels"]
        rows = (labels != IGNORE).any(-1)
        if not bool(rows.any()):  # every rank must still reduce the head's (zero) gradients
            zero = sum(p.sum() for p in self.heads.mlm.parameters()) * 0.0
            return {"mlm_loss": zero, "mlm_correct": zero.detach(), "mlm_masked": zero.detach()}
        ids, mask, labels = batch["mlm_input_ids"][rows], batch["attention_mask"][rows], labels[rows]
        text = self.encoder.text(input_ids=ids, attention_mask=mask)["tokens"]
        fused = self.encoder.fuse(text, mask, f["image_cls"][rows], f["image_patches"][rows])[:, :ids.shape[1]]
        picked = labels != IGNORE
        logits = self.heads.mlm(fused[picked])  # (M, V)
        loss = mlm_loss(logits, labels[picked])
        with torch.no_grad():
            correct = (logits.argmax(-1) == labels[picked]).sum().float()
        return {"mlm_loss": loss, "mlm_correct": correct, "mlm_masked": picked.sum().float()}


@torch.no_grad()
def retrieval_counts(itm_logits, match, t, v) -> dict[str, torch.Tensor]:
    """Counts that average exactly over batches: ITM correct / pairs, text->image R@1 hits / matched pairs."""
    keep = match > 0.5
    tm, vm = F.normalize(t[keep].float(), dim=-1), F.normalize(v[keep].float(), dim=-1)
    hits = (tm @ vm.T).argmax(-1) == torch.arange(len(tm), device=t.device) if len(tm) else tm.new_zeros(0)
    return {"itm_correct": ((itm_logits > 0) == keep).sum().float(), "pairs": torch.tensor(float(len(match))),
            "r1_hits": hits.sum().float(), "matched": keep.sum().float()}


def rates(sums: dict[str, float]) -> dict[str, float]:
    """Accuracies from summed counts: ITM accuracy, text->image R@1 and (with the MLM term) masked-token accuracy."""
    out = {"itm_acc": sums["itm_correct"] / max(1.0, sums["pairs"]),
           "cit_r1": sums["r1_hits"] / max(1.0, sums["matched"])}
    if "mlm_masked" in sums:
        out["mlm_acc"] = sums["mlm_correct"] / max(1.0, sums["mlm_masked"])
    return out
