"""A dataset split made ready for the model (examples -> features, pictures decoded once, contexts, POS tags), its
scoring against gold, and the predictions file of a run."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from common.fusion import FusionEncoder
from finetune.batches import build_features
from finetune.config import FinetuneConfig
from finetune.context import ContextSource, build_context
from finetune.examples import Split
from finetune.images import STAND_IN, ImageStore, default_image
from finetune.metrics import joint_scores, ner_scores, re_scores
from finetune.pos import PosTagger
from finetune.retrieval import Retriever

STAND_IN_NOTE = ("a missing or unreadable picture is one grey stand-in; its vision features are computed once, "
                 "without gradient, and reused while the vision weights are unchanged; real pictures go through the "
                 "vision encoder every step")

class SplitData:
    """A split ready for the model: examples, features, images (decoded once), and what was missing."""

    def __init__(self, split: Split, feats, images: dict[str, torch.Tensor], image_counts: dict, context_counts: dict,
                 truncation: dict, image_handling: dict):
        self.split, self.feats, self.images = split, feats, images
        self.image_counts, self.context_counts, self.truncation = image_counts, context_counts, truncation
        self.image_handling = image_handling
        self.teacher: torch.Tensor | None = None  # (n, 2, Dt) IMM's teacher embeddings (training split, sw_weight > 0)


def context_source(cfg: FinetuneConfig, persist: bool = True):
    """The run's context source; with data.image none there is no picture to describe (a file still applies)."""
    spec = cfg.data.context if cfg.data.image == "on" or cfg.data.context.startswith("file:") else "none"
    return build_context(spec, persist=persist, top_k=cfg.data.context_top_k, min_prob=cfg.data.context_min_prob,
                         missing=cfg.data.missing_context)


def decode_size(vision_size: int, ctx: ContextSource) -> int:
    """The square side a store shared by the context source and the model decodes pictures at (ImageStore): the
    larger of their input sizes; 0 (full size) when the context source reads whole pictures (a detector)."""
    return 0 if ctx.image_size == 0 else max(vision_size, ctx.image_size)


def decode_pictures(examples: list, store: ImageStore, preprocess, stand_in: torch.Tensor):
    """Each distinct picture decoded and preprocessed once: ({name: tensor}, {name: ok | missing | unreadable});
    a missing or unreadable one (and a post without one) is the stand-in tensor itself, shared."""
    images: dict[str, torch.Tensor] = {STAND_IN: stand_in}
    status_of: dict[str, str] = {}
    for ex in examples:
        if ex.image not in images:
            img, status = store.open(ex.image)
            images[ex.image] = preprocess(img) if status == "ok" else stand_in
            if ex.image:
                status_of[ex.image] = status
    return images, status_of


def featurize(cfg: FinetuneConfig, examples: list, tokenizer, classes: list[str], tagger: PosTagger,
              contexts: list[str]):
    """Part-of-speech tags (+ spaCy's entity tags, head.spacy_entities), then features (sub-tokens of [text;
    context], word starts, labels (MNER's as valid BIO with head.bio_constraints), characters when head.char_dim > 0,
    MJERE's BIO targets when head.entity_tagger > 0) and truncation."""
    sentences = [ex.tokens for ex in examples]
    ents = tagger.entities(sentences) if cfg.head.spacy_entities else None
    return build_features(cfg.task, examples, tokenizer, tagger.tag(sentences), contexts, cfg.data.max_length,
                          classes, cfg.data.markers, cfg.data.max_context_length, ents, cfg.head.char_dim > 0,
                          entity_tags=cfg.task == "mjere" and cfg.head.entity_tagger > 0,
                          valid_bio=cfg.task == "mner" and cfg.head.bio_constraints)


def prepare_split(cfg: FinetuneConfig, split: Split, encoder: FusionEncoder, classes: list[str],
                  store_root: Path | None, pos_tagger: PosTagger, retriever: Retriever | None = None) -> SplitData:
    """A split ready for training or evaluation; the same steps as prediction (Predictor.predict). With a
    retriever (data.retrieve > 0), each post's nearest training posts follow its picture's description."""
    examples = split.examples
    ctx_source = context_source(cfg)
    store = ImageStore(store_root if cfg.data.image == "on" else None,
                       decode_size=decode_size(encoder.vision.image_size, ctx_source))
    contexts = ctx_source.describe([ex.image for ex in examples], store)
    if retriever is not None:
        contexts = retriever.contexts(examples, contexts)
    images, _ = decode_pictures(examples, store, encoder.vision.preprocess,
                                encoder.vision.preprocess(default_image()))
    feats, truncation = featurize(cfg, examples, encoder.tokenizer, classes, pos_tagger, contexts)
    counts = store.report() if cfg.data.image == "on" else {"disabled": len(examples)}
    stand_in = sum(images[ex.image] is images[STAND_IN] for ex in examples)
    handling = {"posts_with_picture": len(examples) - stand_in, "posts_with_stand_in": stand_in,
                "distinct_pictures": len({id(images[ex.image]) for ex in examples} - {id(images[STAND_IN])})}
    return SplitData(split, feats, images, counts, ctx_source.report(), truncation, handling)


def score(task: str, data: SplitData, preds: list) -> dict:
    examples = data.split.examples
    if task == "mner":
        gold = [ex.tags for ex in examples]
        pred = [p + ["O"] * (len(ex.tags) - len(p)) for p, ex in zip(preds, examples)]  # truncated words: O
        return ner_scores(gold, pred)
    if task == "mre":
        return re_scores([ex.triples[0].label for ex in examples], preds)
    return joint_scores([ex.triples for ex in examples], [p[1] for p in preds],
                        [ex.entities for ex in examples], [p[0] for p in preds])


def _jsonable(p):
    if isinstance(p, tuple):
        ents, triples = p
        return {"entities": [asdict(e) for e in ents], "triples": [asdict(t) for t in triples]}
    return p


def write_predictions(path: Path, task: str, examples: list, preds: list) -> None:
    """One JSON line per example: uid, tokens, image, gold and predicted labels (MRE: and the entity pair)."""
    with open(path, "w") as f:
        for ex, p in zip(examples, preds):
            gold = ex.tags if task == "mner" else (
                ex.triples[0].label if task == "mre" else _jsonable((ex.entities, ex.triples)))
            row = {"uid": ex.uid, "tokens": ex.tokens, "image": ex.image, "gold": gold, "pred": _jsonable(p)}
            if task == "mre":
                h, t = ex.triples[0].head, ex.triples[0].tail
                row["pair"] = {"head": [h.start, h.end], "tail": [t.start, t.end]}
            f.write(json.dumps(row) + "\n")


def warn_if_no_picture_found(data: dict[str, SplitData], splits: dict[str, Split], root: Path | None) -> None:
    """An image root was given (or found) but not one picture of any split is under it: most likely the wrong
    root, so say which root was tried and what a path looked like (the run goes on, as text + stand-in)."""
    if root is None:
        return
    counts = [d.image_counts for d in data.values()]
    if sum(c.get("ok", 0) for c in counts) == 0 and sum(c.get("missing", 0) for c in counts) > 0:
        example = next((ex.image for s in splits.values() for ex in s.examples if ex.image), "")
        print(f"warning: none of the pictures is under the image root {root} (e.g. {root / example}); every "
              f"post gets the grey stand-in. Is --images the folder that holds the files the dataset names?",
              file=sys.stderr)
