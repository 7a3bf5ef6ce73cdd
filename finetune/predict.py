"""Predict with a fine-tuned run.

    python -m finetune.predict --run runs/<run> --text "Jordan wins the cup" [--image photo.jpg]
    python -m finetune.predict --run runs/<run> --jsonl posts.jsonl [--images DIR] > predictions.jsonl

JSONL input: one {"text" or "tokens", "image" (optional file name under --images, or a path), "head"/"tail"
([start, end) word spans; relation extraction only)} per line. Output: one JSON object per post with "entities"
[{"start", "end", "type", "text"}] and "relations" [{"head", "tail", "label"}]; "truncated_words" counts the words
past data.max_length that the model never saw (they get no entity), and an MRE pair whose markers fell past it gets
label null and a "warning" instead of a guess. A post whose picture is missing or unreadable is predicted with the
grey stand-in and counted on stderr; `--image` naming a file that does not exist is an error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from common.errors import DataError, MmieError, cli_main
from common.jsonfile import read_jsonl
from finetune.batches import predict_features
from finetune.examples import Example, Span, Triple
from finetune.labels import NONE_RELATION
from finetune.images import ImageStore, default_image
from finetune.pos import PosTagger
from finetune.readers import tags_to_spans
from finetune.splits import context_source, decode_pictures, featurize


def _word_span(value, where: str, key: str, n_words: int) -> Span:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in value):
        raise DataError(f"{where}: field {key}: expected [start, end] word indices, got {value!r:.60}")
    if not 0 <= value[0] < value[1] <= n_words:
        raise DataError(f"{where}: field {key}: span {list(value)} is outside the {n_words} words")
    return Span(*value)


def to_example(i: int, post, task: str, where: str | None = None) -> Example:
    """One input post -> Example; `where` names it in errors (file:line for JSONL, else "post i")."""
    where = where or f"post {i}"
    if not isinstance(post, dict):
        raise DataError(f"{where}: expected a JSON object with \"text\" or \"tokens\", got {type(post).__name__}")
    tokens, text, image = post.get("tokens"), post.get("text", ""), post.get("image") or ""
    if tokens is not None and (not isinstance(tokens, list) or not all(isinstance(w, str) and w for w in tokens)):
        raise DataError(f"{where}: field tokens: expected a list of non-empty strings")
    if not isinstance(text, str):
        raise DataError(f"{where}: field text: expected a string, got {type(text).__name__}")
    if not isinstance(image, str):
        raise DataError(f"{where}: field image: expected a file name or path, got {type(image).__name__}")
    tokens = tokens or text.split()
    if not tokens:
        raise DataError(f"{where}: no text")
    ex = Example(uid=f"input:{i}", tokens=list(tokens), image=image)
    if task == "mner":
        ex.tags = ["O"] * len(tokens)
    elif task == "mre":
        if "head" not in post or "tail" not in post:
            raise DataError(f"{where}: relation extraction needs the entity pair: \"head\" and \"tail\" spans")
        h, t = (_word_span(post[k], where, k, len(tokens)) for k in ("head", "tail"))
        ex.triples = [Triple(h, t, NONE_RELATION)]
    return ex


def _entity(ex: Example, s: Span) -> dict:
    return {"start": s.start, "end": s.end, "type": s.label, "text": " ".join(ex.tokens[s.start:s.end])}


class Predictor:
    """A loaded model ready for posts: the part-of-speech tagger, the context source (with its vision model) and
    the stand-in picture are made once, so each call (a CLI's file, a server's request) pays only for its posts.
    persist=False keeps new POS tags and picture descriptions in memory for the call instead of rewriting the
    cache files under $MMIE_CACHE (what a server wants: the rewrite costs more than the prediction)."""

    def __init__(self, model, cfg, persist: bool = True):
        self.model, self.cfg, self.persist = model, cfg, persist
        self.tagger = PosTagger(persist=persist)
        self.context = context_source(cfg, persist=persist)
        self.stand_in = model.encoder.vision.preprocess(default_image())

    @torch.no_grad()
    def predict(self, posts: list[dict], image_root: Path | None = None, where: list[str] | None = None,
                counts: dict | None = None) -> list[dict]:
        """Predictions per post; `counts` (if given) receives the picture outcomes ({"ok", "missing",
        "unreadable"})."""
        model, cfg = self.model, self.cfg
        examples = [to_example(i, p, cfg.task, where[i] if where else None) for i, p in enumerate(posts)]
        store = ImageStore(image_root or Path("/"), keep=True)  # absolute image paths work with root "/"; the
        # context source and the model then share each decoded picture
        contexts = self.context.describe([ex.image for ex in examples], store)
        if model.retriever is not None:  # data.retrieve: the nearest training posts follow the description
            contexts = model.retriever.contexts(examples, contexts, self.persist)
        images, status_of = decode_pictures(examples, store, model.encoder.vision.preprocess, self.stand_in)
        feats, _ = featurize(cfg, examples, model.encoder.tokenizer, model.classes, self.tagger, contexts)
        preds = predict_features(model, feats, images, model.encoder.tokenizer.pad_token_id, cfg.task,
                                 cfg.train.eval_batch_size)
        if counts is not None:
            counts.update({k: sum(v == k for v in status_of.values()) for k in ("ok", "missing", "unreadable")})
        return [self.row(ex, p, ctx, f) for ex, p, ctx, f in zip(examples, preds, contexts, feats)]

    def row(self, ex: Example, p, ctx: str, f) -> dict:
        cfg = self.cfg
        row = {"tokens": ex.tokens, "image": ex.image, "context": ctx, "entities": [], "relations": [],
               "truncated_words": sum(s < 0 for s in f.word_start)}
        if cfg.task == "mner":
            row["entities"] = [_entity(ex, s) for s in tags_to_spans(p)]
        elif cfg.task == "mre":
            t = ex.triples[0]
            row["entities"] = [_entity(ex, t.head), _entity(ex, t.tail)]
            if f.word_start[f.pair[0]] < 0 or f.word_start[f.pair[1]] < 0:
                p = None
                row["warning"] = (f"the pair's markers fall past data.max_length={cfg.data.max_length} sub-tokens: "
                                  "no relation is predicted")
            row["relations"] = [{"head": _entity(ex, t.head), "tail": _entity(ex, t.tail), "label": p}]
        else:
            ents, triples = p
            row["entities"] = [_entity(ex, s) for s in ents]
            row["relations"] = [{"head": _entity(ex, t.head), "tail": _entity(ex, t.tail), "label": t.label}
                                for t in triples]
        return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m finetune.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="a fine-tuning run directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text")
    src.add_argument("--jsonl", type=Path)
    p.add_argument("--image", help="image file for --text")
    p.add_argument("--head", help="START:END word span of the head entity (relation extraction)")
    p.add_argument("--tail", help="START:END word span of the tail entity (relation extraction)")
    p.add_argument("--images", type=Path, help="image root for the file names in --jsonl")
    a = p.parse_args(argv)
    from finetune.checkpoint import load_trained

    if a.image and not Path(a.image).is_file():
        raise DataError(f"--image {a.image} does not exist")
    model, cfg = load_trained(a.run)
    where = None
    if a.text is not None:
        post: dict = {"text": a.text, "image": str(Path(a.image).resolve()) if a.image else ""}
        for key in ("head", "tail"):
            value = getattr(a, key)
            if value:
                try:
                    post[key] = [int(x) for x in value.split(":")]
                except ValueError:
                    raise MmieError(f"--{key} {value!r}: expected START:END word indices") from None
        posts, root = [post], None
    else:
        lines = read_jsonl(a.jsonl)
        posts, where = [post for _, post in lines], [f"{a.jsonl}:{n}" for n, _ in lines]
        root = a.images
    counts: dict = {}
    for row in Predictor(model, cfg).predict(posts, root, where, counts):
        sys.stdout.write(json.dumps(row) + "\n")
    if counts["missing"] or counts["unreadable"]:
        print(f"pictures: {counts['ok']} read, {counts['missing']} missing, {counts['unreadable']} unreadable "
              f"(those posts were predicted with the grey stand-in)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli_main(main)
