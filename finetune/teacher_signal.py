"""IMM's pseudo-signal (its Eq. 5): a teacher's embedding of every training post's text and picture, computed once
per dataset and cached under $MMIE_CACHE/teacher/ (keyed by the teacher, the texts and the pictures' bytes), never
inside the training loop; finetune/task.py forms P = max(0, cos(T_c, V_c)) per batch from them.

    label-bridge           (offline default) the text's MiniLM sentence embedding; the picture's EfficientNet-Lite0
                           ImageNet class probabilities times MiniLM embeddings of "a photo of a {class}"
    clip:<arch>:<weights>  open_clip's text and image towers (IMM's teacher is CLIP)

A post without a readable picture gets the grey stand-in's embedding (counted in the training images report).
"""
from __future__ import annotations

import hashlib

import torch
from tqdm import tqdm

from common.errors import MmieError
from common.offline import cache_dir, cached_tensor
from finetune.images import ImageStore, default_image


def _key(spec: str, texts: list[str], names: list[str], store: ImageStore) -> str:
    h = hashlib.sha1(f"teacher-signal/1\0{spec}".encode())
    for text, name in zip(texts, names):
        path = store.path(name) if name else None
        h.update(text.encode() + b"\0")
        h.update(hashlib.sha1(path.read_bytes()).digest() if path is not None and path.is_file() else b"-")
    return h.hexdigest()


def _compute(spec: str, texts: list[str], names: list[str], store: ImageStore) -> torch.Tensor:
    from common.teacher import build_teacher

    teacher = build_teacher(spec)
    with torch.no_grad():
        text_emb = teacher.embed_prompts(texts)  # (N, Dt), normalised
        pictures: dict[str, int] = {}  # name -> row of image_emb; every missing picture shares the stand-in's row
        images = [default_image()]
        for name in names:
            if name in pictures:
                continue
            img, status = store.open(name) if name else (None, "missing")
            pictures[name] = len(images) if status == "ok" else 0
            if status == "ok":
                images.append(img)
        rows = [teacher.embed_images(images[i:i + 32]) for i in tqdm(range(0, len(images), 32), leave=False,
                                                                       desc=f"teacher {teacher.name} pictures")]
        image_emb = torch.cat(rows)[[pictures[n] for n in names]]  # (N, Dt)
    if text_emb.shape != image_emb.shape:
        raise MmieError(f"teacher {spec}: text and image embeddings differ in shape ({tuple(text_emb.shape)} vs "
                        f"{tuple(image_emb.shape)})")
    return torch.stack([text_emb, image_emb], 1)  # (N, 2, Dt)


def teacher_embeddings(spec: str, texts: list[str], names: list[str], store: ImageStore,
                       persist: bool = True) -> torch.Tensor:
    """(N, 2, Dt): row i = [teacher text embedding, teacher image embedding] of post i."""
    path = cache_dir() / "teacher" / f"{_key(spec, texts, names, store)}.safetensors"
    return cached_tensor(path, len(texts), lambda: _compute(spec, texts, names, store), persist)


def split_signal(spec: str, examples: list, store: ImageStore) -> torch.Tensor:
    """teacher_embeddings of a split's posts (text: its words joined by spaces). The global RNG is left as it was,
    so a run draws the same numbers whether the signal came from the cache or was computed."""
    with torch.random.fork_rng():
        return teacher_embeddings(spec, [" ".join(ex.tokens) for ex in examples], [ex.image for ex in examples],
                                  store)
