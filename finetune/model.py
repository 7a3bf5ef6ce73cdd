"""The fine-tuning model: FusionEncoder over [text; context] and the image -> a fusion from the registry
(finetune/fusions/, `fusion.kind`) -> CRF head (MNER) or word-pair head (MRE, MJERE). Features, heads and decoding
here; the loss terms and their weights are in finetune/task.py."""
from __future__ import annotations

import torch
from torch import nn

from common.fusion import FusionEncoder
from finetune import calibration
from finetune.config import FinetuneConfig
from finetune.crf import CRF
from finetune.fusions import build_fusion, masked_mean
from finetune.labels import ENTITY_TYPES, NER_TAGS
from finetune.pos import ENT_TAGS, UPOS
from finetune.shape import CHAR_VOCAB, SHAPES
from finetune.wordpair import WordPairHead, grid_loss


class CharCNN(nn.Module):
    """Ma & Hovy (2016)'s character CNN: 30-d character embeddings, `filters` convolutions of width 3, max-pooled
    over the word's characters, projected to `out` (the form space): (N, W, C) ids -> (N, W, out)."""

    def __init__(self, filters: int, out: int, char_dim: int = 30):
        super().__init__()
        self.emb = nn.Embedding(CHAR_VOCAB, char_dim, padding_idx=0)
        self.conv = nn.Conv1d(char_dim, filters, 3, padding=1)
        self.proj = nn.Linear(filters, out)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        N, W, C = chars.shape
        x = self.conv(self.emb(chars.view(N * W, C)).transpose(1, 2))  # (N*W, filters, C)
        x = x.masked_fill((chars.view(N * W, 1, C) == 0), float("-inf")).amax(-1)  # padding never wins the max
        x = torch.where(torch.isfinite(x), x, torch.zeros_like(x))  # padded words (no characters) -> 0
        return self.proj(x).view(N, W, -1)


class Extractor(nn.Module):
    def __init__(self, encoder: FusionEncoder, cfg: FinetuneConfig, classes: list[str]):
        super().__init__()
        self.encoder, self.cfg, self.classes, self.task = encoder, cfg, classes, cfg.task
        D, h, a = encoder.dim, cfg.head, cfg.align
        self.fusion = build_fusion(D, cfg.fusion, h.dropout)  # fusion.kind, from the registry
        self._stand_in: tuple | None = None  # (picture shape + vision versions, stand-in vision features)
        self.retriever = None  # data.retrieve > 0: the training-post store (finetune/retrieval.py), set by its builder
        self.align_t, self.align_c, self.align_v = (nn.Linear(D, a.proj_dim) for _ in range(3))
        self.dropout = nn.Dropout(h.dropout)
        # a word's form: its part of speech plus (head.word_shape) its casing/shape, (head.spacy_entities) spaCy's
        # entity guess and (head.char_dim) a character CNN over the cased word, summed in one embedding space
        self.pos_emb = nn.Embedding(len(UPOS) + 1, h.pos_dim, padding_idx=0)
        self.shape_emb = nn.Embedding(len(SHAPES), h.pos_dim, padding_idx=0) if h.word_shape else None
        self.ent_emb = nn.Embedding(len(ENT_TAGS) + 1, h.pos_dim, padding_idx=0) if h.spacy_entities else None
        self.char_cnn = CharCNN(h.char_dim, h.pos_dim) if h.char_dim else None
        if self.task == "mner" or (self.task == "mjere" and h.entity_tagger > 0):  # MJERE: the auxiliary tagger
            self.position_emb = nn.Embedding(h.max_positions, h.position_dim)
            n_tags = len(classes) if self.task == "mner" else len(NER_TAGS)  # MJERE's tagger: BIO of the types
            self.emit = nn.Sequential(nn.Linear(D + h.pos_dim + h.position_dim, h.hidden), nn.GELU(),
                                      nn.Dropout(h.dropout), nn.Linear(h.hidden, n_tags))
            tag_names = list(classes) if self.task == "mner" else NER_TAGS
            self.crf = CRF(n_tags, tags=tag_names if h.bio_constraints else None)
        if self.task == "mre" and h.relation == "markers":  # the plain marker-pair classifier: [<h>; <t>] -> linear
            self.marker_pair = nn.Linear(2 * D + (2 * h.pos_dim if h.marker_form else 0), len(classes))
        elif self.task == "mre" and h.relation == "cls":  # IMM's RE head (its Eq. 24): the fused [CLS] -> linear
            self.cls_head = nn.Linear(D, len(classes))
        elif self.task != "mner":
            self.pair = WordPairHead(D, len(classes), h.pos_dim, h.position_dim, max_words=h.max_positions,
                                     hidden=h.hidden, lam=h.lam, dropout=h.dropout)
        if self.task != "mner":  # the `None` decoding margin (calibration.py): chosen on dev, saved with the heads
            self.register_buffer("none_margin", torch.zeros(()))
            self.register_buffer("class_weight", torch.ones(len(classes)), persistent=False)
            self.class_weight[0] = h.none_weight
        if self.task == "mjere":  # which (head type, tail type) pairs each relation has in training (typed_decode)
            self.register_buffer("relation_types", torch.ones(len(classes), len(ENTITY_TYPES), len(ENTITY_TYPES)))

    def stand_in_vision(self, picture: torch.Tensor) -> dict[str, torch.Tensor]:
        """The vision encoder's features of the stand-in picture (1, 3, S, S): a constant input, so they are computed
        without gradient, in eval mode (batch-norm running statistics; a lone grey picture's batch statistics would
        also drift them), and reused until the vision weights or buffers change (their version counters move when
        an optimizer step or a state-dict load writes them)."""
        vision = self.encoder.vision
        key = (tuple(picture.shape), *(t._version for t in (*vision.parameters(), *vision.buffers())))
        if self._stand_in is None or self._stand_in[0] != key:
            was_training = vision.training
            vision.eval()
            with torch.no_grad():
                out = vision(picture)
            vision.train(was_training)
            self._stand_in = (key, out)
        return self._stand_in[1]

    def encode_images(self, batch: dict) -> dict[str, torch.Tensor]:
        """The batch's distinct pictures (I, 3, S, S) -> {"cls": (I, D), "patches": (I, P, D)}. Real pictures go
        through the vision encoder (with gradient); the stand-in for missing ones reuses stand_in_vision, so a
        dataset without images costs no vision forward or backward per step. The projections train either way."""
        enc, images, stand_in = self.encoder, batch["images"], batch["stand_in"]
        if not bool(stand_in.any()):
            return enc.encode_image(images)
        fixed = self.stand_in_vision(images[stand_in][:1])  # {"patches": (1, P, Dv), "pooled": (1, Dv)}
        out = {k: v.expand(images.shape[0], *v.shape[1:]) for k, v in fixed.items()}
        real = (~stand_in).nonzero().squeeze(1)
        if real.numel():
            seen = enc.vision(images[real])
            out = {k: v.index_copy(0, real, seen[k].to(v.dtype)) for k, v in out.items()}
        return enc.project_image(out)

    def features(self, batch: dict) -> dict[str, torch.Tensor]:
        enc = self.encoder
        H = enc.text(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])["tokens"]  # (N, L, D)
        img = self.encode_images(batch)  # per distinct picture
        v_cls = img["cls"][batch["image_index"]]  # (N, D)
        v_patches = img["patches"][batch["image_index"]]  # (N, P, D)
        E = enc.fuse(H, batch["attention_mask"], v_cls, v_patches)  # (N, L + 1 + P, D)
        L = H.shape[1]
        E_text, E_img = E[:, :L], E[:, L:]
        masks = {"attention": batch["attention_mask"], "text": batch["text_mask"], "ctx": batch["ctx_mask"]}
        fused = self.fusion(E_text, E_img, masks)
        M = fused["tokens"]  # (N, L, D) image-aware token states
        words = M.gather(1, batch["word_index"][..., None].expand(-1, -1, M.shape[-1]))  # (N, W, D)
        f = {"words": self.dropout(words), "x_t": masked_mean(H, batch["text_mask"]),
             "x_c": masked_mean(H, batch["ctx_mask"]), "x_v": v_cls, "has_ctx": batch["ctx_mask"].any(1)}
        if "text_vec" in fused:  # the fusion's own sentence/image features, for IPS-CL (finetune/task.py)
            f |= {"ips_t": fused["text_vec"], "ips_v": fused["image_vec"]}
        if "sw" in fused:  # IMM's SW-loss inputs
            f["sw"] = fused["sw"]
        if hasattr(self, "cls_head"):  # only MRE with head.relation=cls reads the fused [CLS]
            f["cls"] = self.dropout(M[:, 0])
        return f

    def form(self, batch: dict) -> torch.Tensor:
        form = self.pos_emb(batch["pos"])  # (N, W, pos_dim)
        if self.shape_emb is not None:
            form = form + self.shape_emb(batch["shape"])
        if self.ent_emb is not None:
            form = form + self.ent_emb(batch["ents"])
        if self.char_cnn is not None:
            form = form + self.char_cnn(batch["chars"])
        return form

    def emissions(self, words: torch.Tensor, batch: dict) -> torch.Tensor:
        W = words.shape[1]
        positions = torch.arange(W, device=words.device).clamp(max=self.position_emb.num_embeddings - 1)
        positions = positions[None].expand(words.shape[0], -1)
        return self.emit(torch.cat([words, self.form(batch), self.position_emb(positions)], -1))

    def relation_out(self, f: dict, batch: dict) -> dict[str, torch.Tensor]:
        """MRE: log-probabilities (N, C) of the marked pair, as {"final": ...} (+ "text" from the word-pair head)."""
        if self.cfg.head.relation == "markers":
            rows = torch.arange(f["words"].shape[0], device=f["words"].device)
            h, t = f["words"][rows, batch["pair"][:, 0]], f["words"][rows, batch["pair"][:, 1]]  # (N, D) each
            x = [h, t]
            if self.cfg.head.marker_form:  # each span's first word follows its opening marker
                first = (batch["pair"] + 1).clamp(max=f["words"].shape[1] - 1)
                form = self.form(batch)
                x += [form[rows, first[:, 0]], form[rows, first[:, 1]]]
            return {"final": torch.log_softmax(self.marker_pair(torch.cat(x, -1)), -1)}
        if hasattr(self, "cls_head"):
            return {"final": torch.log_softmax(self.cls_head(f["cls"]), -1)}
        return self.pair(f["words"], self.form(batch), batch["pair"])  # one cell per post: (<h>, <t>)

    def main_loss(self, f: dict, batch: dict) -> torch.Tensor:
        """The task's own loss: CRF NLL (MNER) or the NLL of the marked pair (MRE) or of the grid (MJERE)."""
        if self.task == "mner":
            emissions = self.emissions(f["words"], batch)
            loss = self.crf.nll(emissions, batch["tags"], batch["word_mask"])
            if self.cfg.head.label_smoothing > 0:  # per sentence, like the NLL: its words' CE to the uniform
                uniform_ce = -(torch.log_softmax(emissions, -1).mean(-1) * batch["word_mask"]).sum(1).mean()
                loss = loss + self.cfg.head.label_smoothing * uniform_ce
            return loss
        if self.task == "mre":
            return grid_loss(self.relation_out(f, batch), batch["relation"], self.class_weight,
                             self.cfg.head.text_channel_loss)
        loss = grid_loss(self.pair(f["words"], self.form(batch)), batch["grid"], self.class_weight,
                         self.cfg.head.text_channel_loss)
        if self.cfg.head.entity_tagger > 0:  # the tagger's sentence NLL per word, on the grid's per-cell scale
            nll = self.crf.nll(self.emissions(f["words"], batch), batch["tags"], batch["word_mask"])
            loss = loss + self.cfg.head.entity_tagger * nll / batch["word_mask"].sum(1).float().mean()
        return loss

    @torch.no_grad()
    def predict(self, batch: dict) -> list:
        """Per example: MNER tag names per kept word; MRE a relation name; MJERE (entities, triples)."""
        f = self.features(batch)
        n_words = batch["word_mask"].sum(1).tolist()
        if self.task == "mner":
            paths = self.crf.decode(self.emissions(f["words"], batch), batch["word_mask"])
            return [[self.classes[t] for t in p] for p in paths]
        margin = float(self.none_margin)
        if self.task == "mre":
            pred = calibration.decode(self.relation_out(f, batch)["final"], margin)  # (N,)
            return [self.classes[i] for i in pred.tolist()]
        logp = self.pair(f["words"], self.form(batch))["final"]  # (N, W, W, C)
        allowed = self.relation_types if self.cfg.head.typed_decode else None
        return calibration.decode_sentences([logp[i, :n, :n] for i, n in enumerate(n_words)], margin, self.classes,
                                            allowed)

    @torch.no_grad()
    def relation_logp(self, batch: dict) -> list[torch.Tensor]:
        """Per example: MRE (C,) log-probabilities of the marked pair; MJERE (W, W, C) over its words (for
        choosing the `None` margin on dev)."""
        f = self.features(batch)
        if self.task == "mre":
            return list(self.relation_out(f, batch)["final"])
        logp = self.pair(f["words"], self.form(batch))["final"]
        return [logp[i, :n, :n] for i, n in enumerate(batch["word_mask"].sum(1).tolist())]
