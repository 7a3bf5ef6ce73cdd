"""The work of one prepare unit (pretrain/plan.py), the same function whatever runs it (pretrain/backends.py):
a Workshop holds what a worker loads once — the detector, the teacher and the prompt embeddings — and labels a
LabelUnit's pictures or writes a ShardUnit's tar file."""
from __future__ import annotations

import io
import json
import os
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from common.detector import build_detector
from common.teacher import build_teacher, soft_topk
from pretrain.config import PrepareConfig
from pretrain.plan import LabelUnit, ShardUnit


def load_image(path: Path) -> tuple[bytes, Image.Image] | str:
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
    if fmt != "JPEG":  # stored as JPEG under the .jpg key (PIL's encoder is deterministic)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95)
        raw = buf.getvalue()
    return raw, img


def jpeg_bytes(path: Path) -> bytes | str:
    """JPEG bytes of a picture labelled earlier: its file as is when it is a JPEG, else converted again, or the
    reason it cannot be read now (it changed or vanished since it was labelled)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return "image file missing"
    if raw[:3] == b"\xff\xd8\xff":
        return raw
    got = load_image(path)
    return got if isinstance(got, str) else got[0]


class Labeller:
    """Boxes and teacher soft labels for a batch of pictures."""

    def __init__(self, teacher, detector, vocab: dict, top_k: int):
        self.teacher, self.detector, self.top_k = teacher, detector, top_k
        self.ent_emb = teacher.embed_prompts([vocab["entity_prompt"].format(e) for e in vocab["entities"]])
        self.rel_emb = teacher.embed_prompts([vocab["relation_prompt"].format(r) for r in vocab["relations"]])

    def label(self, images: dict) -> dict:
        """{key: picture} -> {key: its boxes and soft labels}, the pictures run as one batch."""
        if not images:
            return {}
        paths, imgs = list(images), list(images.values())
        boxes = self.detector.detect(imgs)
        crops = [im.crop((b.x0, b.y0, b.x1, b.y1)) for im, bs in zip(imgs, boxes) for b in bs]
        whole = self.teacher.embed_images(imgs)  # (N, D)
        rel_ids, rel_probs = soft_topk(whole, self.rel_emb, self.teacher.tau, self.top_k)
        ent_ids, ent_probs = soft_topk(self.teacher.embed_images(crops), self.ent_emb, self.teacher.tau,
                                       self.top_k) if crops else ([], [])
        k, out = 0, {}
        for i, (p, im) in enumerate(zip(paths, imgs)):
            n = len(boxes[i])
            out[p] = {"width": im.width, "height": im.height, "boxes": [b.as_list() for b in boxes[i]],
                             "box_labels": [b.label for b in boxes[i]],
                             "ent_ids": ent_ids[k:k + n], "ent_probs": ent_probs[k:k + n],
                             "rel_ids": rel_ids[i], "rel_probs": rel_probs[i]}
            k += n
        return out


def load_models(cfg: PrepareConfig) -> tuple:
    return (build_teacher(cfg.teacher, image_size=cfg.teacher_size, tau=cfg.tau),
            build_detector(cfg.detector, max_boxes=cfg.max_boxes))


@contextmanager
def pinned_threads(n: int):
    """torch's intra-op threads set to n inside, restored after (the inline backend shares its process)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Workshop:
    """One worker's models, loaded once. `threads` pins torch's threads: the teacher's floats may depend on how
    a matrix product is split across threads, and every backend must write the same bytes."""

    def __init__(self, cfg: PrepareConfig, vocab: dict, models=None):
        """models: (teacher, detector) when the caller has them loaded already."""
        self.threads = cfg.threads
        self.teacher, self.detector = models or load_models(cfg)
        with pinned_threads(self.threads):  # the prompt embeddings too: every float the shards hold
            self.labeller = Labeller(self.teacher, self.detector, vocab, cfg.top_k)

    def label(self, unit: LabelUnit) -> dict[str, dict | str]:
        """Each picture of the unit -> its boxes and soft labels, or the reason it cannot be used."""
        out: dict[str, dict | str] = {}
        good: dict[str, Image.Image] = {}
        for path in unit.images:
            got = load_image(Path(path))
            if isinstance(got, str):
                out[path] = got
            else:
                good[path] = got[1]
        with pinned_threads(self.threads):
            out.update(self.labeller.label(good))  # one batch: the plan's
        return {path: out[path] for path in unit.images}


def write_shard(unit: ShardUnit, labels: dict[str, dict | str], out_dir: Path) -> dict:
    """Write the unit's shard (temp name, then renamed) from its pairs and their pictures' labels; returns its
    counts: samples, matched, falsified, skipped {reason: n}, and the shard's name (None when it holds nothing)."""
    import webdataset as wds

    counts, skipped = Counter(), Counter()
    tmp = out_dir / f".{unit.name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f, wds.TarWriter(f, mtime=0) as writer:
        for p in unit.pairs:
            label = labels[str(p.image_path)]
            raw = label if isinstance(label, str) else jpeg_bytes(p.image_path)
            if isinstance(raw, str):
                skipped[raw] += 1
                continue
            meta = dict(label, match=p.match, caption_id=p.caption_id, image_id=p.image_id,
                        similarity=p.similarity, index=p.index)
            writer.write({"__key__": f"{p.index:09d}", "jpg": raw, "txt": p.caption,
                          "json": json.dumps(meta, sort_keys=True).encode()})
            counts["samples"] += 1
            counts["matched" if p.match else "falsified"] += 1
    if counts["samples"]:
        tmp.replace(out_dir / unit.name)
    else:
        tmp.unlink()
    return {"shard": unit.name if counts["samples"] else None, "samples": counts["samples"],
            "matched": counts["matched"], "falsified": counts["falsified"], "skipped": dict(skipped)}
