"""python -m pretrain.prepare --annotations FILE --data-json FILE --images DIR --out DIR [options]

NewsCLIPpings-format pairs -> WebDataset shards carrying everything pretraining needs: the image (jpg), the
caption (txt) and a json with the match label, the object boxes, the teacher's top-k entity soft labels per box
and top-k relation soft labels per image, and the source ids. The teacher and the detector run here, once per
distinct image, never inside the training loop. Beside the shards: vocab.json and manifest.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import re
import shutil
import time
from collections import Counter
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from common.detector import build_detector
from common.config import load_config
from common.errors import ConfigError, DataError, cli_main
from common.jsonfile import load_json
from common.teacher import ENTITY_PROMPT, RELATION_PROMPT, build_teacher, soft_topk
from pretrain.config import PrepareConfig
from pretrain.newsclippings import Pair, read_pairs
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


def build_vocab(pairs: list[Pair], cfg: PrepareConfig) -> dict:
    if cfg.vocab:
        return read_vocab(Path(cfg.vocab))
    captions = sorted({p.caption for p in pairs})
    relations = relation_vocab(Path(cfg.relations) if cfg.relations else DEFAULT_RELATIONS)
    vocab = {"entities": entity_vocab(captions, cfg.entities), "relations": relations,
             "entity_prompt": ENTITY_PROMPT, "relation_prompt": RELATION_PROMPT}
    if not vocab["entities"]:
        raise DataError(f"{cfg.annotations}: the captions hold no nouns, so there is no entity vocabulary")
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


def prepare(cfg: PrepareConfig) -> dict:
    out = Path(cfg.out)
    # Everything is written to a staging directory beside `out` and swapped in only when it is complete, so a run
    # that fails (bad flag, missing weights, nearly every pair skipped, a kill) leaves an earlier output untouched.
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest = _prepare_into(staging, cfg)
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


def _prepare_into(out: Path, cfg: PrepareConfig) -> dict:
    import webdataset as wds

    t0 = time.perf_counter()
    pairs, skipped = read_pairs(Path(cfg.annotations), Path(cfg.data_json), Path(cfg.images))
    n_annotations = len(pairs) + sum(skipped.values())
    vocab = build_vocab(pairs, cfg)
    teacher = build_teacher(cfg.teacher, image_size=cfg.teacher_size, tau=cfg.tau)
    detector = build_detector(cfg.detector, max_boxes=cfg.max_boxes)
    vocab.update(teacher=teacher.name, tau=teacher.tau, top_k=cfg.top_k, detector=detector.name)
    labeller = Labeller(teacher, detector, vocab, cfg.top_k)
    counts, bad_images = Counter(), {}
    writer = wds.ShardWriter(str(out / SHARD_PATTERN), maxcount=cfg.shard_size, mtime=0, verbose=0)
    try:
        bar = tqdm(total=len(pairs), desc="prepare shards", unit="pair")
        for start in range(0, len(pairs), cfg.batch_size):
            chunk = pairs[start:start + cfg.batch_size]
            _write_chunk(chunk, labeller, writer, bad_images, skipped, counts)
            bar.update(len(chunk))
        bar.close()
    finally:
        writer.close()
    check_not_empty(counts, skipped, n_annotations, pairs, Path(cfg.images))
    shards = sorted(f.name for f in out.glob("shard-*.tar"))
    per_shard = [min(cfg.shard_size, counts["samples"] - i * cfg.shard_size) for i in range(len(shards))]
    vocab["digest"] = vocab_digest(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab, indent=1) + "\n")
    manifest = {"shards": shards, "samples_per_shard": per_shard, "samples": counts["samples"],
                "matched": counts["matched"], "falsified": counts["falsified"],
                "pairs_in": n_annotations,
                "images": len(labeller.cache), "skipped": dict(sorted(skipped.items())),
                "teacher": teacher.name, "detector": detector.name, "vocab_digest": vocab["digest"],
                "entities": len(vocab["entities"]), "relations": len(vocab["relations"]),
                "annotations": str(cfg.annotations), "wall_s": round(time.perf_counter() - t0, 1)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


REQUIRED = ("annotations", "data_json", "images", "out")
HELP = {"annotations": "NewsCLIPpings annotations/<split>.json",
        "data_json": "VisualNews data.json (id -> caption, image_path)",
        "images": "root that data.json's image paths are relative to", "out": "shard directory",
        "teacher": "label-bridge | clip:<arch>:<weights.pt>", "detector": "crops | yolo:<weights.pt>",
        "entities": "M: entity vocabulary size (top spaCy nouns)",
        "relations": "relation names, one per line (default: pretrain/relations.txt)",
        "vocab": "reuse this vocab.json (e.g. the train split's for val)",
        "top_k": "soft-label entries kept per box / image; 0: the full distribution (PROMU)", "max_boxes": "object boxes per image",
        "shard_size": "samples per shard", "batch_size": "pairs per teacher batch",
        "teacher_size": "image size the label-bridge teacher sees",
        "tau": "teacher temperature (default: the teacher's)"}


def parse(argv: list[str] | None = None) -> PrepareConfig:
    """The command line as a checked PrepareConfig: each flag given (--top-k 5) is the dotted override top_k=5 on
    the dataclass defaults, so the flags, their types and their ranges have one source (pretrain/config.py)."""
    p = argparse.ArgumentParser(prog="python -m pretrain.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(PrepareConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name in REQUIRED:
            p.add_argument(flag, required=True, help=HELP[f.name])
        else:
            p.add_argument(flag, default=argparse.SUPPRESS, help=f"{HELP[f.name]} (default: {f.default})")
    given = vars(p.parse_args(argv))
    text = {f.name for f in dataclasses.fields(PrepareConfig) if f.type == "str"}  # a path like 2024 stays text
    try:
        return load_config(PrepareConfig, None, [f"{k}={v!r}" if k in text else f"{k}={v}" for k, v in given.items()])
    except ConfigError as e:  # named as the flag the user typed: "prepare.shard_size: ..." -> "--shard-size: ..."
        p.error(re.sub(r"^(?:prepare\.)?(\w+):", lambda m: f"--{m.group(1).replace('_', '-')}:", str(e)))


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    m = prepare(cfg)
    skipped = ", ".join(f"{k} {v}" for k, v in m["skipped"].items()) or "none"
    print(f"{m['samples']} samples ({m['matched']} matched, {m['falsified']} falsified) from {m['images']} images "
          f"in {len(m['shards'])} shards -> {cfg.out} ({m['wall_s']}s; teacher {m['teacher']}, detector "
          f"{m['detector']}; {m['entities']} entities, {m['relations']} relations); skipped: {skipped}")
    return 0


if __name__ == "__main__":
    cli_main(main)
