"""Bridging contexts (Shap-CA's image descriptions), one string per post image.

    --context file:<json>   precomputed descriptions, {img_id: text} (e.g. written by LLaVA on a GPU box)
    --context offline       described here from what the zoo can see: EfficientNet-Lite0's top ImageNet classes,
                            faces (facenet-pytorch MTCNN, when installed), objects (a detector, when given);
                            cached on disk by image content, so each image is described once
    --context none          no context (ablation)

    python -m finetune.context generate --images DIR --generator PATH --out contexts.json
                            writes such a file with a local image-to-text model (finetune/context_generate.py)

A post whose image is missing or unreadable gets an honest generic context (`data.missing_context=generic`, the
default) or none (`none`: the same sentence for every such post tells the model nothing and costs every step its
tokens; README, "Session 42"); every fallback is counted.
"""
from __future__ import annotations

import hashlib
import importlib.util
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from common.errors import DataError, MmieError
from common.jsonfile import load_json, write_json
from common.offline import cache_dir, read_cache
from finetune.images import ImageStore

GENERIC_CONTEXT = "No picture is available for this post."
MISSING_CONTEXT = {"none": "", "generic": GENERIC_CONTEXT}  # data.missing_context -> the fallback text
OFFLINE_VERSION = "offline-v2"  # v2: JPEGs decoded at a reduced scale >= 224 px (ImageStore.decode_size)
TOP_K, MIN_PROB = 3, 0.05  # the offline describer names the top_k ImageNet classes with p >= min_prob


class ContextSource:
    name = "none"
    image_size = -1  # the square side it resizes pictures to; -1: reads no picture; 0: reads them at full size

    def __init__(self, fallback: str = GENERIC_CONTEXT):
        """fallback: the context of a post whose picture (or its description) is missing: "" or GENERIC_CONTEXT."""
        self.counts: Counter = Counter()
        self.fallback = fallback

    def describe(self, names: list[str], store: ImageStore) -> list[str]:
        self.counts["none"] += len(names)
        return [""] * len(names)

    def report(self) -> dict[str, int]:
        return dict(self.counts)


class FileContext(ContextSource):
    def __init__(self, path: Path, fallback: str = GENERIC_CONTEXT):
        super().__init__(fallback)
        self.name = f"file:{path}"
        data = load_json(path, f"context file {path} does not exist",
                         f"context file {path}: not a JSON object of image id -> text")
        if not isinstance(data, dict):
            raise DataError(f"context file {path}: expected a JSON object of image id -> text")
        bad = next((k for k, v in data.items() if v is not None and not isinstance(v, str)), None)
        if bad is not None:
            raise DataError(f"context file {path}: the value for {bad!r} is {type(data[bad]).__name__}, not text")
        self.texts = {str(k): v for k, v in data.items() if v is not None}  # null: no description for that image

    def describe(self, names: list[str], store: ImageStore) -> list[str]:
        out = []
        for name in names:
            text = self.texts.get(name) or self.texts.get(Path(name).stem)
            self.counts["from file" if text else "missing from file"] += 1
            out.append(text or self.fallback)
        return out


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


class OfflineContext(ContextSource):
    """EfficientNet-Lite0 classes (+ faces, + detected objects) -> one descriptive sentence per image."""
    CLASSIFIER_SIZE = 224  # EfficientNet-Lite0's own input size

    def __init__(self, top_k: int = TOP_K, min_prob: float = MIN_PROB, detector=None, batch_size: int = 32,
                 cache: Path | None = None, persist: bool = True, fallback: str = GENERIC_CONTEXT):
        """persist: write new descriptions back to the cache file (False: in memory only, as a server wants)."""
        super().__init__(fallback)
        self.name, self.persist = "offline", persist
        self.top_k, self.min_prob, self.detector, self.batch_size = top_k, min_prob, detector, batch_size
        tag = OFFLINE_VERSION + (f"-{detector.name}" if detector is not None else "")
        if (top_k, min_prob) != (TOP_K, MIN_PROB):  # other settings, other descriptions: their own cache file
            tag += f"-top{top_k}-min{min_prob}"  # (the defaults keep the plain name of the version)
        self.cache_path = cache or (cache_dir() / "contexts" / f"{hashlib.sha1(tag.encode()).hexdigest()[:12]}.json")
        self.cache: dict[str, str] = read_cache(self.cache_path, lambda v: isinstance(v, str))
        faces = importlib.util.find_spec("facenet_pytorch") is not None
        self.image_size = 0 if detector is not None or faces else self.CLASSIFIER_SIZE  # detectors: full picture
        self._vision = None
        self._faces = None

    def _models(self):
        if self._vision is None:
            from common.zoo import build_vision_encoder

            self._vision = build_vision_encoder("efficientnet-lite0", self.CLASSIFIER_SIZE).for_inference()
            if importlib.util.find_spec("facenet_pytorch") is not None:
                from facenet_pytorch import MTCNN

                self._faces = MTCNN(keep_all=True, device="cpu")
        return self._vision, self._faces

    @torch.no_grad()
    def _describe_images(self, images) -> list[str]:
        vision, faces = self._models()
        probs = vision.classify_pictures(images).softmax(-1)  # (B, 1000)
        cats = vision.categories
        objects = self.detector.labels(images) if self.detector is not None else [[] for _ in images]
        texts = []
        for i, im in enumerate(images):
            top = probs[i].topk(self.top_k)
            names = [cats[j] for p, j in zip(top.values, top.indices) if p >= self.min_prob]
            names = names or [cats[int(top.indices[0])]]
            text = f"The image looks like {_join([_article(n) for n in names])}."
            if faces is not None:
                boxes, _ = faces.detect(im)
                n = 0 if boxes is None else len(boxes)
                if n:
                    text += f" It shows {n} face{'s' if n > 1 else ''}."
            if objects[i]:
                counts = Counter(objects[i])
                text += " It contains " + _join([f"{c} {k}{'s' if c > 1 else ''}" for k, c in counts.items()]) + "."
            texts.append(text)
        return texts

    def describe(self, names: list[str], store: ImageStore) -> list[str]:
        out: list[str | None] = [None] * len(names)
        todo: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            path = store.path(name)
            if path is None or not path.is_file():
                self.counts["missing image"] += 1
                out[i] = self.fallback
                continue
            key = hashlib.sha1(path.read_bytes()).hexdigest()
            if key in self.cache:
                self.counts["cached"] += 1
                out[i] = self.cache[key]
            else:
                todo.setdefault(key, []).append(i)
        keys = list(todo)
        for b in tqdm(range(0, len(keys), self.batch_size), desc="offline contexts", leave=False,
                      disable=len(keys) < self.batch_size):
            batch = keys[b:b + self.batch_size]
            images, ok = [], []
            for key in batch:
                img, status = store.open(names[todo[key][0]])
                if status == "ok":
                    images.append(img)
                    ok.append(key)
                else:
                    for i in todo[key]:
                        out[i] = self.fallback
                    self.counts["unreadable image"] += len(todo[key])
            for key, text in zip(ok, self._describe_images(images) if images else []):
                if self.persist:  # a server's descriptions stay per call: its memory does not grow per picture
                    self.cache[key] = text
                for i in todo[key]:
                    out[i] = text
                self.counts["described"] += len(todo[key])
        if keys and self.persist:
            write_json(self.cache_path, self.cache)
        return out  # type: ignore[return-value]


def build_context(spec: str, detector=None, persist: bool = True, top_k: int = TOP_K,
                  min_prob: float = MIN_PROB, missing: str = "generic") -> ContextSource:
    """top_k, min_prob: the offline describer's ImageNet classes (the most probable top_k with p >= min_prob);
    missing: the context of a post without its picture or description, "none" (empty) or "generic"."""
    if missing not in MISSING_CONTEXT:
        raise MmieError(f"unknown missing-picture context {missing!r}: use {' or '.join(MISSING_CONTEXT)}")
    fallback = MISSING_CONTEXT[missing]
    if spec == "none":
        return ContextSource()
    if spec == "offline":
        return OfflineContext(top_k=top_k, min_prob=min_prob, detector=detector, persist=persist, fallback=fallback)
    if spec.startswith("file:"):
        return FileContext(Path(spec[len("file:"):]), fallback=fallback)
    raise MmieError(f"unknown context source {spec!r}: use none, offline or file:<json>")


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "generate":
        raise MmieError("usage: python -m finetune.context generate --images DIR --generator PATH --out FILE "
                        "(--help after generate for the rest)")
    from finetune.context_generate import main as generate_main

    return generate_main(argv[1:])


if __name__ == "__main__":
    from common.errors import cli_main

    cli_main(main)
