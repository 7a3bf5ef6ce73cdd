"""python -m pretrain.prepare --annotations FILE --data-json FILE --images DIR --out DIR [options]

NewsCLIPpings-format pairs -> WebDataset shards carrying everything pretraining needs: the image (jpg), the
caption (txt) and a json with the match label, the object boxes, the teacher's top-k entity soft labels per box
and top-k relation soft labels per image, and the source ids. The teacher and the detector run here, once per
distinct image, never inside the training loop. Beside the shards: vocab.json and manifest.json.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import time
from collections import Counter
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from common.detector import build_detector
from common.errors import DataError, cli_main
from common.jsonfile import load_json
from pretrain.newsclippings import Pair, read_pairs
from common.teacher import ENTITY_PROMPT, RELATION_PROMPT, build_teacher, soft_topk
from pretrain.vocab import DEFAULT_RELATIONS, entity_vocab, relation_vocab

SHARD_PATTERN = "shard-%06d.tar"


def _load_image(path: Path) -> tuple[bytes, Image.Image] | str:
    """(jpeg bytes, decoded image) or the reason it cannot be used."""
    if not path.is_file():
        return "image file missing"
    raw = path.read_bytes()
    try:
        with Image.open(io.BytesIO(raw)) as im:
            fmt = im.format
            img = im.convert("RGB")  # forces a full decode: truncated files fail here
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return "image unreadable"
    if fmt != "JPEG":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95)
        raw = buf.getvalue()
    return raw, img


def reread_jpeg(path: Path) -> bytes | str:
    """JPEG bytes of an image labelled in an earlier batch: its file as is when it is a JPEG, else converted again
    (a PNG reused later was once stored as PNG bytes under the .jpg key), or the reason it cannot be read now."""
    try:
        raw = path.read_bytes()
    except OSError:
        return "image file missing"
    if raw[:3] == b"\xff\xd8\xff":
        return raw
    got = _load_image(path)
    return got if isinstance(got, str) else got[0]


def vocab_digest(vocab: dict) -> str:
    text = json.dumps([vocab["entities"], vocab["relations"]], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def read_vocab(path: Path) -> dict:
    """A vocab.json written by an earlier prepare (e.g. the train split's, reused for val), checked field by field."""
    vocab = load_json(path, f"--vocab {path} does not exist", f"{path}: not a vocab.json written by pretrain.prepare")
    if not isinstance(vocab, dict):
        raise DataError(f"{path}: expected a JSON object with entities, relations, entity_prompt, relation_prompt")
    for field in ("entities", "relations"):
        value = vocab.get(field)
        if not isinstance(value, list) or not value or not all(isinstance(x, str) and x for x in value):
            raise DataError(f"{path}: field {field}: expected a non-empty list of names")
    for field in ("entity_prompt", "relation_prompt"):
        value = vocab.get(field)
        if not isinstance(value, str) or value.count("{}") != 1:
            raise DataError(f"{path}: field {field}: expected a prompt with one {{}} slot, got {value!r:.60}")
    return vocab


def build_vocab(pairs: list[Pair], args) -> dict:
    if args.vocab:
        return read_vocab(Path(args.vocab))
    captions = sorted({p.caption for p in pairs})
    vocab = {"entities": entity_vocab(captions, args.entities), "relations": relation_vocab(args.relations),
             "entity_prompt": ENTITY_PROMPT, "relation_prompt": RELATION_PROMPT}
    if not vocab["entities"]:
        raise DataError(f"{args.annotations}: the captions hold no nouns, so there is no entity vocabulary")
    return vocab


class Labeller:
    """Boxes and teacher soft labels per distinct image, cached so each image is processed once."""

    def __init__(self, teacher, detector, vocab: dict, top_k: int):
        self.teacher, self.detector, self.top_k = teacher, detector, top_k
        self.ent_emb = teacher.embed_prompts([vocab["entity_prompt"].format(e) for e in vocab["entities"]])
        self.rel_emb = teacher.embed_prompts([vocab["relation_prompt"].format(r) for r in vocab["relations"]])
        self.cache: dict[Path, dict] = {}

    def label(self, images: dict[Path, Image.Image]) -> None:
        paths = [p for p in images if p not in self.cache]
        if not paths:
            return
        imgs = [images[p] for p in paths]
        boxes = self.detector.detect(imgs)
        crops = [im.crop((b.x0, b.y0, b.x1, b.y1)) for im, bs in zip(imgs, boxes) for b in bs]
        whole = self.teacher.embed_images(imgs)  # (N, D)
        rel_ids, rel_probs = soft_topk(whole, self.rel_emb, self.teacher.tau, self.top_k)
        ent_ids, ent_probs = soft_topk(self.teacher.embed_images(crops), self.ent_emb, self.teacher.tau,
                                       self.top_k) if crops else ([], [])
        k = 0
        for i, (p, im) in enumerate(zip(paths, imgs)):
            n = len(boxes[i])
            self.cache[p] = {"width": im.width, "height": im.height, "boxes": [b.as_list() for b in boxes[i]],
                             "box_labels": [b.label for b in boxes[i]],
                             "ent_ids": ent_ids[k:k + n], "ent_probs": ent_probs[k:k + n],
                             "rel_ids": rel_ids[i], "rel_probs": rel_probs[i]}
            k += n


def prepare(args) -> dict:
    out = Path(args.out)
    # Everything is written to a staging directory beside `out` and swapped in only when it is complete, so a run
    # that fails (bad flag, missing weights, nearly every pair skipped, a kill) leaves an earlier output untouched.
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest = _prepare_into(staging, args)
        out.mkdir(parents=True, exist_ok=True)
        for old in [*out.glob("shard-*.tar"), out / "vocab.json", out / "manifest.json"]:
            old.unlink(missing_ok=True)  # a re-run replaces the shards, never mixes them
        for new in sorted(staging.iterdir()):
            new.replace(out / new.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def check_not_empty(counts: Counter, skipped: Counter, n_annotations: int, pairs: list[Pair], images: Path) -> None:
    """Stop with an error when no sample was written or one reason skipped nearly every pair (>= 95%): that is a
    wrong flag (most often --images pointing at the images/ folder instead of the root data.json's paths are
    relative to), not a dataset to train on."""
    reason, n = max(skipped.items(), key=lambda kv: kv[1], default=("", 0))
    if counts["samples"] and n < 0.95 * n_annotations:
        return
    hint = ""
    if reason == "image file missing" and pairs:
        hint = (f"; looked for images under --images {images} (e.g. {pairs[0].image_path}): is it the root that "
                f"data.json's image_path values are relative to?")
    raise DataError(f"{counts['samples']} samples written: {n} of {n_annotations} pairs skipped as {reason!r}"
                    f"{hint}")


def _write_chunk(chunk: list, labeller, writer, bad_images: dict, skipped: Counter, counts: Counter) -> None:
    """Label a chunk's new pictures (each read once) and write its pairs; an unreadable picture skips its pairs."""
    loaded: dict[Path, tuple[bytes, Image.Image]] = {}
    for p in chunk:
        if p.image_path in loaded or p.image_path in bad_images or p.image_path in labeller.cache:
            continue
        got = _load_image(p.image_path)
        if isinstance(got, str):
            bad_images[p.image_path] = got
        else:
            loaded[p.image_path] = got
    labeller.label({path: img for path, (_, img) in loaded.items()})
    for p in chunk:
        if p.image_path in bad_images:
            skipped[bad_images[p.image_path]] += 1
            continue
        raw = loaded[p.image_path][0] if p.image_path in loaded else reread_jpeg(p.image_path)
        if isinstance(raw, str):  # the file changed or vanished since it was labelled
            skipped[raw] += 1
            continue
        meta = dict(labeller.cache[p.image_path], match=p.match, caption_id=p.caption_id,
                    image_id=p.image_id, similarity=p.similarity, index=p.index)
        writer.write({"__key__": f"{p.index:09d}", "jpg": raw, "txt": p.caption,
                      "json": json.dumps(meta, sort_keys=True).encode()})
        counts["samples"] += 1
        counts["matched" if p.match else "falsified"] += 1


def _prepare_into(out: Path, args) -> dict:
    import webdataset as wds

    t0 = time.perf_counter()
    pairs, skipped = read_pairs(Path(args.annotations), Path(args.data_json), Path(args.images))
    n_annotations = len(pairs) + sum(skipped.values())
    vocab = build_vocab(pairs, args)
    teacher = build_teacher(args.teacher, image_size=args.teacher_size, tau=args.tau)
    detector = build_detector(args.detector, max_boxes=args.max_boxes)
    vocab.update(teacher=teacher.name, tau=teacher.tau, top_k=args.top_k, detector=detector.name)
    labeller = Labeller(teacher, detector, vocab, args.top_k)
    counts, bad_images = Counter(), {}
    writer = wds.ShardWriter(str(out / SHARD_PATTERN), maxcount=args.shard_size, mtime=0, verbose=0)
    try:
        bar = tqdm(total=len(pairs), desc="prepare shards", unit="pair")
        for start in range(0, len(pairs), args.batch_size):
            chunk = pairs[start:start + args.batch_size]
            _write_chunk(chunk, labeller, writer, bad_images, skipped, counts)
            bar.update(len(chunk))
        bar.close()
    finally:
        writer.close()
    check_not_empty(counts, skipped, n_annotations, pairs, Path(args.images))
    shards = sorted(f.name for f in out.glob("shard-*.tar"))
    per_shard = [min(args.shard_size, counts["samples"] - i * args.shard_size) for i in range(len(shards))]
    vocab["digest"] = vocab_digest(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab, indent=1) + "\n")
    manifest = {"shards": shards, "samples_per_shard": per_shard, "samples": counts["samples"],
                "matched": counts["matched"], "falsified": counts["falsified"],
                "pairs_in": n_annotations,
                "images": len(labeller.cache), "skipped": dict(sorted(skipped.items())),
                "teacher": teacher.name, "detector": detector.name, "vocab_digest": vocab["digest"],
                "entities": len(vocab["entities"]), "relations": len(vocab["relations"]),
                "annotations": str(args.annotations), "wall_s": round(time.perf_counter() - t0, 1)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def positive(text: str) -> int:
    """argparse type: an integer >= 1 (--shard-size 0 wrote one shard per sample with a manifest of zeros)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pretrain.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotations", required=True, help="NewsCLIPpings annotations/<split>.json")
    p.add_argument("--data-json", required=True, help="VisualNews data.json (id -> caption, image_path)")
    p.add_argument("--images", required=True, help="root that data.json's image paths are relative to")
    p.add_argument("--out", required=True, help="shard directory")
    p.add_argument("--teacher", default="label-bridge", help="label-bridge | clip:<arch>:<weights.pt>")
    p.add_argument("--detector", default="crops", help="crops | yolo:<weights.pt>")
    p.add_argument("--entities", type=int, default=1000, help="M: entity vocabulary size (top spaCy nouns)")
    p.add_argument("--relations", type=Path, default=DEFAULT_RELATIONS, help="relation names, one per line")
    p.add_argument("--vocab", default=None, help="reuse this vocab.json (e.g. the train split's for val)")
    p.add_argument("--top-k", type=positive, default=5, help="soft-label entries kept per box / image")
    p.add_argument("--max-boxes", type=int, default=6)
    p.add_argument("--shard-size", type=positive, default=1000, help="samples per shard")
    p.add_argument("--batch-size", type=positive, default=64, help="pairs per teacher batch")
    p.add_argument("--teacher-size", type=int, default=224, help="image size the label-bridge teacher sees")
    p.add_argument("--tau", type=float, default=None, help="teacher temperature (default: the teacher's)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    m = prepare(args)
    skipped = ", ".join(f"{k} {v}" for k, v in m["skipped"].items()) or "none"
    print(f"{m['samples']} samples ({m['matched']} matched, {m['falsified']} falsified) from {m['images']} images "
          f"in {len(m['shards'])} shards -> {args.out} ({m['wall_s']}s; teacher {m['teacher']}, detector "
          f"{m['detector']}; {m['entities']} entities, {m['relations']} relations); skipped: {skipped}")
    return 0


if __name__ == "__main__":
    cli_main(main)
