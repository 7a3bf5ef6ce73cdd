"""Predict with a fine-tuned run.

    python -m finetune.predict --run runs/<run> --text "Jordan wins the cup" [--image photo.jpg]
    python -m finetune.predict --run runs/<run> --jsonl posts.jsonl [--images DIR] > predictions.jsonl

JSONL input: one {"text" or "tokens", "image" (optional file name under --images, or a path), "head"/"tail"
([start, end) word spans; relation extraction only)} per line. Output: one JSON object per post with "entities"
[{"start", "end", "type", "text"}] and "relations" [{"head", "tail", "label"}].
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from common.errors import DataError, MmieError, cli_main
from finetune.batches import build_features, predict_features
from finetune.context import build_context
from finetune.examples import NONE_RELATION, Example, Span, Triple
from finetune.images import STAND_IN, ImageStore, default_image
from finetune.pos import PosTagger
from finetune.readers import tags_to_spans


def to_example(i: int, post: dict, task: str) -> Example:
    tokens = post.get("tokens") or str(post.get("text", "")).split()
    if not tokens:
        raise DataError(f"post {i}: no text")
    ex = Example(uid=f"input:{i}", tokens=list(tokens), image=str(post.get("image") or ""))
    if task == "mner":
        ex.tags = ["O"] * len(tokens)
    elif task == "mre":
        if "head" not in post or "tail" not in post:
            raise DataError(f"post {i}: relation extraction needs the entity pair: \"head\" and \"tail\" spans")
        h, t = Span(*post["head"]), Span(*post["tail"])
        if not (0 <= h.start < h.end <= len(tokens) and 0 <= t.start < t.end <= len(tokens)):
            raise DataError(f"post {i}: head/tail span outside the {len(tokens)} words")
        ex.triples = [Triple(h, t, NONE_RELATION)]
    return ex


def _entity(ex: Example, s: Span) -> dict:
    return {"start": s.start, "end": s.end, "type": s.label, "text": " ".join(ex.tokens[s.start:s.end])}


def predict_posts(model, cfg, posts: list[dict], image_root: Path | None) -> list[dict]:
    examples = [to_example(i, p, cfg.task) for i, p in enumerate(posts)]
    store = ImageStore(image_root or Path("/"))  # absolute image paths work with root "/"
    spec = cfg.data.context if cfg.data.image == "on" or cfg.data.context.startswith("file:") else "none"
    contexts = build_context(spec).describe([ex.image for ex in examples], store)
    images = {STAND_IN: model.encoder.vision.preprocess(default_image())}
    for ex in examples:
        if ex.image not in images:
            img, status = store.open(ex.image)
            images[ex.image] = model.encoder.vision.preprocess(img) if status == "ok" else images[STAND_IN]
    pos = PosTagger().tag([ex.tokens for ex in examples])
    feats, _ = build_features(cfg.task, examples, model.encoder.tokenizer, pos, contexts, cfg.data.max_length,
                              model.classes, cfg.data.markers)
    preds = predict_features(model, feats, images, model.encoder.tokenizer.pad_token_id, cfg.task,
                             cfg.train.eval_batch_size)
    out = []
    for ex, p, ctx in zip(examples, preds, contexts):
        row = {"tokens": ex.tokens, "image": ex.image, "context": ctx, "entities": [], "relations": []}
        if cfg.task == "mner":
            row["entities"] = [_entity(ex, s) for s in tags_to_spans(p)]
        elif cfg.task == "mre":
            t = ex.triples[0]
            row["entities"] = [_entity(ex, t.head), _entity(ex, t.tail)]
            row["relations"] = [{"head": _entity(ex, t.head), "tail": _entity(ex, t.tail), "label": p}]
        else:
            ents, triples = p
            row["entities"] = [_entity(ex, s) for s in ents]
            row["relations"] = [{"head": _entity(ex, t.head), "tail": _entity(ex, t.tail), "label": t.label}
                                for t in triples]
        out.append(row)
    return out


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
    from finetune.trainer import load_trained

    model, cfg = load_trained(a.run)
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
        if not a.jsonl.is_file():
            raise DataError(f"{a.jsonl} does not exist")
        posts = []
        for n, line in enumerate(a.jsonl.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    posts.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{a.jsonl}:{n}: not JSON ({e.msg})") from None
        root = a.images
    with torch.no_grad():
        for row in predict_posts(model, cfg, posts, root):
            sys.stdout.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    cli_main(main)
