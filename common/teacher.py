"""Teachers that place images and texts in one space: soft labels for pretraining (computed once when the shards
are built) and IMM's pseudo-signal for fine-tuning (finetune/teacher_signal.py, computed once per dataset).

    label-bridge           offline default: EfficientNet-Lite0 ImageNet class probabilities x MiniLM embeddings
                           of "a photo of a {class}" place an image in the text space of the prompts
    clip:<arch>:<weights>  open_clip image and text towers (needs real weights: a random CLIP teaches nothing)

q = softmax(cos(image, prompt) / tau) over the prompts; callers keep the top-k.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch.nn import functional as F

from common.errors import ZooError

ENTITY_PROMPT = "This is an image of {}"
RELATION_PROMPT = "The image shows the relation of {}"


class LabelBridgeTeacher:
    name = "label-bridge"

    def __init__(self, image_size: int = 224, tau: float = 0.03):
        from common.zoo import TextEncoder, build_vision_encoder

        self.vision = build_vision_encoder("efficientnet-lite0", image_size=image_size).eval()
        self.text = TextEncoder("minilm-l6").eval()
        self.tau = tau
        self.class_emb = self.text.embed([f"a photo of a {c}" for c in self.vision.categories])  # (1000, D)

    @torch.no_grad()
    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        probs = self.vision.classify_pictures(images).softmax(-1)  # (N, 1000)
        return F.normalize(probs @ self.class_emb, dim=-1)  # (N, D)

    def embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        return self.text.embed(prompts)  # (M, D), normalised


class ClipTeacher:
    def __init__(self, arch: str, weights: str, tau: float = 0.01):
        import open_clip

        if not weights or not Path(weights).is_file():
            raise ZooError(f"teacher clip:{arch} needs a weights file (clip:{arch}:<weights.pt>); got {weights!r}")
        if arch not in open_clip.list_models():
            raise ZooError(f"unknown open_clip architecture {arch!r}")
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(arch, pretrained=weights)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.name, self.tau = f"clip:{arch}:{Path(weights).name}", tau

    @torch.no_grad()
    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        x = torch.stack([self.preprocess(im.convert("RGB")) for im in images])
        return F.normalize(self.model.encode_image(x), dim=-1)

    @torch.no_grad()
    def embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        out = [self.model.encode_text(self.tokenizer(prompts[i:i + 256])) for i in range(0, len(prompts), 256)]
        return F.normalize(torch.cat(out), dim=-1)


def build_teacher(spec: str, image_size: int = 224, tau: float | None = None):
    if spec == "label-bridge":
        return LabelBridgeTeacher(image_size=image_size, **({"tau": tau} if tau else {}))
    if spec.startswith("clip:"):
        arch, _, weights = spec[len("clip:"):].partition(":")
        return ClipTeacher(arch, weights, **({"tau": tau} if tau else {}))
    raise ZooError(f"unknown teacher {spec!r}: use label-bridge or clip:<arch>:<weights.pt>")


def soft_topk(image_emb: torch.Tensor, prompt_emb: torch.Tensor, tau: float, k: int) -> tuple[list, list]:
    """(N, D) x (M, D) -> per row the top-k prompt ids and their probabilities under softmax(cos / tau); k = 0
    keeps all M (PROMU's full soft-label distribution)."""
    probs = (image_emb @ prompt_emb.T / tau).softmax(-1)  # (N, M)
    top = probs.topk(probs.shape[1] if k == 0 else min(k, probs.shape[1]), dim=-1)
    return top.indices.tolist(), [[round(p, 5) for p in row] for row in top.values.tolist()]
