"""Examples -> model inputs, once per split: words (MRE adds entity markers), sub-word ids of [text; context],
first-sub-token positions, POS ids, labels, and the image of each post (decoded once, shared by name; every
missing picture is the one tensor stored under images.STAND_IN, flagged per batch as "stand_in")."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from common.labels import IGNORE
from finetune.examples import MARKERS, Example
from finetune.images import STAND_IN
from finetune.labels import NER_TAGS
from finetune.pos import ENT_INDEX, POS_INDEX
from finetune.shape import char_ids, shape_ids
from finetune.subwords import encode_batch, truncation_report
from finetune.wordpair import encode_joint



# How the MNRE entity markers reach the text encoder (data.markers), each one sub-token of its own:
# - "tokens": BERT's reserved [unusedN] vocabulary rows, registered as special tokens so the tokenizer never splits
#   them (no new embedding rows; the tokenizer is exported with the model); their embeddings start untrained;
# - "punct": brackets the pretrained model already knows, "[" "]" around the head and "{" "}" around the tail
#   (Zhou & Chen 2021's punctuation markers; "@" and "#", their choice, are everywhere in tweets, brackets are rare:
#   169 "]" and no "}" among MNRE's training words).
# Spelled out, "<h>" became "<", "h", ">" and the head's and tail's marker states both sat on the same "<" sub-token.
MARKER_STYLES = {"tokens": {m: f"[unused{i}]" for i, m in enumerate(MARKERS)},
                 "punct": dict(zip(MARKERS, ("[", "]", "{", "}")))}


def register_markers(tokenizer, style: str = "tokens") -> dict[str, str]:
    """The marker -> sub-token map of `style`; "tokens" become unsplittable special tokens (idempotent). Each must
    be one entry of the vocabulary."""
    table = MARKER_STYLES[style]
    unknown = [t for t in table.values() if tokenizer.convert_tokens_to_ids(t) == tokenizer.unk_token_id]
    if unknown:
        raise ValueError(f"the tokenizer's vocabulary has no {unknown[0]} entry for the MNRE entity markers")
    if style == "tokens":
        tokenizer.add_special_tokens({"additional_special_tokens": list(table.values())})
    return table


def mark_pair(ex: Example) -> tuple[list[str], int, int]:
    """Words with entity markers around the MNRE head and tail; returns (words, head marker, tail marker)."""
    h, t = ex.triples[0].head, ex.triples[0].tail
    inserts = sorted([(h.start, "<h>"), (h.end, "</h>"), (t.start, "<t>"), (t.end, "</t>")],
                     key=lambda x: (x[0], x[1].startswith("</") is False))
    words, pos_of = [], {}
    k = 0
    for i, w in enumerate(ex.tokens + [None]):
        while k < len(inserts) and inserts[k][0] == i:
            pos_of[inserts[k][1]] = len(words)
            words.append(inserts[k][1])
            k += 1
        if w is not None:
            words.append(w)
    return words, pos_of["<h>"], pos_of["<t>"]


@dataclass
class Features:
    input_ids: list[int]
    n_text: int
    word_start: list[int]  # -1: truncated away
    pos: list[int]
    shape: list[int]
    image: str
    labels: object  # mner: tag ids; mre: relation id; mjere: (W, W) grid
    pair: tuple[int, int] = (0, 0)  # mre: (head marker, tail marker) word indices
    extra: dict = field(default_factory=dict)
    ents: list[int] = field(default_factory=list)  # head.spacy_entities: spaCy's entity tag id per word
    chars: list[list[int]] = field(default_factory=list)  # head.char_dim > 0: each word's character ids

    @property
    def n_words(self) -> int:
        """Words kept by truncation (always a prefix)."""
        return next((i for i, s in enumerate(self.word_start) if s < 0), len(self.word_start))


def build_features(task: str, examples: list[Example], tokenizer, pos_tags: list[list[str]], contexts: list[str],
                   max_length: int, classes: list[str], markers: str = "tokens",
                   max_context_length: int = 128, ent_tags: list[list[str]] | None = None,
                   chars: bool = False, entity_tags: bool = False, valid_bio: bool = False
                   ) -> tuple[list[Features], dict]:
    """ent_tags: spaCy's entity tag per word (PosTagger.entities), or None; chars: also each word's characters;
    entity_tags: MJERE, also the gold entities' BIO tags (head.entity_tagger's targets); valid_bio: MNER's targets
    are its entities' BIO tags (an entity that the file begins with I- begins with B-) instead of the file's tags."""
    if task == "mre":
        marked = [mark_pair(ex) for ex in examples]
        words = [m[0] for m in marked]

        def per_word(tags_of, marker_tag, index):  # the markers get marker_tag, the dataset's words their own tags
            out = []
            for (w, _, _), tags in zip(marked, tags_of):
                it = iter(tags)
                out.append([index[marker_tag] if x in MARKERS else index.get(next(it), 0) for x in w])
            return out
        pos = per_word(pos_tags, "PUNCT", POS_INDEX)
        ents = per_word(ent_tags, "O", ENT_INDEX) if ent_tags is not None else None
    else:
        words = [ex.tokens for ex in examples]
        pos = [[POS_INDEX.get(p, 0) for p in tags] for tags in pos_tags]
        ents = [[ENT_INDEX.get(t, 0) for t in tags] for tags in ent_tags] if ent_tags is not None else None
    if task == "mre":
        table = register_markers(tokenizer, markers)
        pieces = [[table.get(x, x) for x in w] for w in words]
    else:
        pieces = words
    encoded = encode_batch(tokenizer, pieces, max_length, contexts=contexts if any(contexts) else None,
                           max_context_length=max_context_length)
    report = truncation_report(examples, encoded) if task != "mre" else {}
    cut = [e.context_cut for e in encoded if e.context_cut]
    if cut:  # contexts longer than data.max_context_length: cut at their own budget, the text untouched
        report.update(contexts_truncated=len(cut), context_subtokens_cut=sum(cut))
    feats = []
    for i, (ex, enc) in enumerate(zip(examples, encoded)):
        f = Features(enc.input_ids, enc.n_text, enc.word_start, pos[i], shape_ids(words[i]), ex.image, None,
                     ents=ents[i] if ents is not None else [], chars=char_ids(words[i]) if chars else [])
        if task == "mner":
            f.labels = bio_tags(ex.entities, len(ex.tokens)) if valid_bio else [NER_TAGS.index(t) for t in ex.tags]
        elif task == "mre":
            f.labels = classes.index(ex.triples[0].label)
            f.pair = (marked[i][1], marked[i][2])
            if enc.word_start[f.pair[0]] < 0 or enc.word_start[f.pair[1]] < 0:
                report["pairs_truncated"] = report.get("pairs_truncated", 0) + 1
        else:
            f.labels = encode_joint(ex, classes, f.n_words)
            if entity_tags:
                f.extra["tags"] = bio_tags(ex.entities, len(ex.tokens))
            unseen = sum(t.label not in classes for t in ex.triples)
            if unseen:  # scored as misses (wordpair.encode_joint)
                report["triples_with_relations_unseen_in_train"] = report.get(
                    "triples_with_relations_unseen_in_train", 0) + unseen
        feats.append(f)
    return feats, report


def bio_tags(entities: list, n_words: int) -> list[int]:
    """Gold entities -> NER_TAGS ids per word (B-/I- of the type); of nested or overlapping entities (MJERE) only the
    longer is tagged (the grid decoder too keeps one of them); an entity past n_words is left untagged."""
    tags = [0] * n_words
    for e in sorted(entities, key=lambda e: (e.start - e.end, e.start)):
        if e.end <= n_words and not any(tags[e.start:e.end]):
            tags[e.start:e.end] = [NER_TAGS.index(f"B-{e.label}")] + [NER_TAGS.index(f"I-{e.label}")] * (
                e.end - e.start - 1)
    return tags


def collate(feats: list[Features], images: dict[str, torch.Tensor], pad_id: int, task: str) -> dict:
    N = len(feats)
    L = max(len(f.input_ids) for f in feats)
    W = max(max(f.n_words, 1) for f in feats)
    input_ids = torch.full((N, L), pad_id, dtype=torch.long)
    attn = torch.zeros(N, L, dtype=torch.long)
    text_mask = torch.zeros(N, L, dtype=torch.bool)
    ctx_mask = torch.zeros(N, L, dtype=torch.bool)
    word_index = torch.zeros(N, W, dtype=torch.long)
    word_mask = torch.zeros(N, W, dtype=torch.bool)
    pos = torch.zeros(N, W, dtype=torch.long)
    shape = torch.zeros(N, W, dtype=torch.long)
    ents = torch.zeros(N, W, dtype=torch.long) if feats[0].ents else None  # head.spacy_entities
    for i, f in enumerate(feats):
        n, w = len(f.input_ids), f.n_words
        input_ids[i, :n] = torch.tensor(f.input_ids)
        attn[i, :n] = 1
        text_mask[i, 1:f.n_text - 1] = True
        ctx_mask[i, f.n_text:n - 1] = True
        word_index[i, :w] = torch.tensor(f.word_start[:w])
        word_mask[i, :w] = True
        pos[i, :w] = torch.tensor(f.pos[:w])
        shape[i, :w] = torch.tensor(f.shape[:w])
        if ents is not None:
            ents[i, :w] = torch.tensor(f.ents[:w])
    slots: dict[int, int] = {}  # id of an image tensor -> its row; every missing picture shares one tensor,
    pictures: list[torch.Tensor] = []  # so the vision encoder sees each distinct picture once per batch
    stand_in = images.get(STAND_IN)
    for name in sorted({f.image for f in feats}):
        if id(images[name]) not in slots:
            slots[id(images[name])] = len(pictures)
            pictures.append(images[name])
    batch = {"input_ids": input_ids, "attention_mask": attn, "text_mask": text_mask, "ctx_mask": ctx_mask,
             "word_index": word_index, "word_mask": word_mask, "pos": pos, "shape": shape,
             "images": torch.stack(pictures), "stand_in": torch.tensor([p is stand_in for p in pictures]),
             "image_index": torch.tensor([slots[id(images[f.image])] for f in feats])}
    if ents is not None:
        batch["ents"] = ents
    if feats[0].chars:
        C = max((len(c) for f in feats for c in f.chars[:f.n_words]), default=1)
        batch["chars"] = torch.tensor([[c + [0] * (C - len(c)) for c in f.chars[:f.n_words]]
                                       + [[0] * C] * (W - f.n_words) for f in feats], dtype=torch.long)
    if task == "mner" or "tags" in feats[0].extra:  # MNER's labels; MJERE's entity-tagger targets
        tags = torch.zeros(N, W, dtype=torch.long)
        for i, f in enumerate(feats):
            tags[i, :f.n_words] = torch.tensor((f.labels if task == "mner" else f.extra["tags"])[:f.n_words])
        batch["tags"] = tags
    if task == "mre":
        batch["pair"] = torch.tensor([f.pair if f.word_start[f.pair[0]] >= 0 and f.word_start[f.pair[1]] >= 0
                                      else (0, 0) for f in feats])
        batch["relation"] = torch.tensor([f.labels for f in feats])
    elif task == "mjere":
        grid = torch.full((N, W, W), IGNORE, dtype=torch.long)
        for i, f in enumerate(feats):
            w = f.n_words
            grid[i, :w, :w] = f.labels[:w, :w]
        batch["grid"] = grid
    return batch


def batches(lengths: list[int], batch_size: int, shuffle: bool, seed: int, pool: int = 0) -> list[list[int]]:
    """Index batches over examples of the given lengths (sub-tokens). Evaluation (shuffle False): sorted by length,
    longest first, so a batch pads little (callers restore the order). Training: a seeded shuffle; with pool > 0,
    each run of pool x batch_size shuffled examples is sorted by length and cut into batches, and the batches are
    shuffled again — length-bucketed batches that still differ every epoch."""
    order = list(range(len(lengths)))
    if not shuffle:
        order.sort(key=lambda i: -lengths[i])
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(order)
    if pool <= 0:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    out = []
    for start in range(0, len(order), pool * batch_size):
        chunk = sorted(order[start:start + pool * batch_size], key=lambda i: lengths[i])
        out.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(out)
    return out


def predict_features(model, feats: list[Features], images: dict[str, torch.Tensor], pad_id: int, task: str,
                     batch_size: int, desc: str | None = None, method: str = "predict") -> list:
    """model.predict (or another per-example method of the model) over length-sorted batches, without gradient;
    the outputs back in the order of `feats`."""
    from tqdm import tqdm

    was_training = model.training
    if was_training:  # eval() walks every module: 2.5 ms per call, a tenth of one post's prediction
        model.eval()
    preds: list = [None] * len(feats)
    with torch.no_grad():
        for idx in tqdm(batches([len(f.input_ids) for f in feats], batch_size, False, 0), desc=desc, leave=False,
                        disable=desc is None):
            for i, p in zip(idx, getattr(model, method)(collate([feats[i] for i in idx], images, pad_id, task))):
                preds[i] = p
    if was_training:
        model.train()
    return preds
