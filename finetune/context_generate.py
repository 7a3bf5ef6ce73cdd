"""Write a contexts file (`{img_id: text}`, what `--context file:<json>` reads) by running a local Hugging Face
image-to-text model over a folder of pictures — Shap-CA's step 1 (its Sec. 3.2: LLaVA-1.5 describes each picture,
sampling temperature 1.0; its Table 2 finds BU, VinVL, BLIP-2 and LLaVA-1.5 contexts within 0.5 F1 of each other).

    python -m finetune.context generate --images DIR --generator PATH --out contexts.json
        [--prompt TEXT] [--temperature 1.0] [--max-new-tokens 128] [--batch-size 8] [--device cpu|cuda]

PATH is a saved model directory that `AutoModelForImageTextToText` and `AutoProcessor` load: BLIP, BLIP-2,
LLaVA-1.5, GIT, ... Chat models (their processor has a chat template, as LLaVA-1.5's does) get the prompt as the
user's turn beside the picture; captioners (BLIP) describe the picture unprompted unless --prompt is given, which
they then continue as a caption prefix. Only the newly generated tokens are kept.

Resumable: pictures already in --out are skipped, and the file is rewritten atomically (temp + rename) every
`--save-every` seconds and at the end, so a stopped run loses at most that much work. Missing or unreadable pictures
(a decompression bomb included) are counted and written as null — no context for them, and not retried.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from common.errors import MmieError
from common.jsonfile import load_json, write_json
from finetune.images import ImageStore

SHAPCA_PROMPT = ("Please generate a clear and concise textual description for this image sourced from a Twitter "
                 "post. Describe this image in English as detailed as possible and avoid repetition in your "
                 "explanation.")  # Shap-CA Sec. 3.2
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"}


def list_images(root: Path) -> list[str]:
    """Picture ids under `root`: paths relative to it, '/'-separated, sorted (the ids datasets name pictures by)."""
    if not root.is_dir():
        raise MmieError(f"--images {root}: not a directory")
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class Generator:
    """A local image-to-text model and its processor; `describe(images)` -> one text per picture."""

    def __init__(self, path: str | Path, prompt: str | None = None, temperature: float = 1.0,
                 max_new_tokens: int = 128, device: str = "cpu"):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(path)
        if not (path / "config.json").is_file():
            raise MmieError(f"--generator {path}: no config.json there (a saved Hugging Face model directory, "
                            f"e.g. llava-1.5-7b-hf or blip-image-captioning-base)")
        self.processor = AutoProcessor.from_pretrained(path)
        self.model = AutoModelForImageTextToText.from_pretrained(path).to(device).eval()
        self.device, self.torch = device, torch
        self.chat = getattr(self.processor, "chat_template", None) is not None
        self.prompt = prompt if prompt is not None else (SHAPCA_PROMPT if self.chat else None)
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None and not self.model.config.is_encoder_decoder:
            tokenizer.padding_side = "left"  # decoder-only chat models continue the prompt at the right edge
        self.generate_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": temperature > 0}
        if temperature > 0:
            self.generate_kwargs["temperature"] = temperature

    def _inputs(self, images):
        if self.chat:
            turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
            text = self.processor.apply_chat_template(turn, add_generation_prompt=True)
            return self.processor(images=images, text=[text] * len(images), padding=True, return_tensors="pt")
        if self.prompt:
            return self.processor(images=images, text=[self.prompt] * len(images), padding=True,
                                  return_tensors="pt")
        return self.processor(images=images, return_tensors="pt")

    def describe(self, images) -> list[str]:
        inputs = self._inputs(images).to(self.device)
        with self.torch.no_grad():
            out = self.model.generate(**inputs, **self.generate_kwargs)
        prompt_ids = inputs.get("input_ids")
        if prompt_ids is not None and out.shape[1] >= prompt_ids.shape[1] \
                and self.torch.equal(out[:, :prompt_ids.shape[1]], prompt_ids):
            out = out[:, prompt_ids.shape[1]:]  # decoder-only models echo the prompt: keep only the new tokens
        return [" ".join(t.split()) for t in self.processor.batch_decode(out, skip_special_tokens=True)]


def _save(path: Path, texts: dict[str, str | None]) -> None:
    write_json(path, texts, ensure_ascii=False, indent=0, sort_keys=True)


def generate_contexts(images: Path, generator: Generator, out: Path, batch_size: int = 8,
                      save_every: float = 60.0) -> Counter:
    """Describe every picture under `images` not yet in `out`; returns counts (described, already there,
    unreadable, missing, empty)."""
    texts: dict[str, str | None] = {}
    if out.exists():
        texts = load_json(out, f"{out} does not exist", f"--out {out}: not a contexts JSON file (resume reads it)")
        if not isinstance(texts, dict):
            raise MmieError(f"--out {out}: not a JSON object of image id -> text (resume reads it)")
    names = list_images(images)
    counts = Counter({"already there": sum(n in texts for n in names)})
    todo = [n for n in names if n not in texts]
    store, last = ImageStore(images), time.monotonic()
    try:
        for b in tqdm(range(0, len(todo), batch_size), desc="describing pictures", unit="batch"):
            batch, pictures = [], []
            for name in todo[b:b + batch_size]:
                img, status = store.open(name)
                if status != "ok":
                    texts[name] = None  # no context, never retried; --context file: counts it missing
                    counts[status] += 1
                else:
                    batch.append(name)
                    pictures.append(img)
            for name, text in zip(batch, generator.describe(pictures) if pictures else []):
                texts[name] = text or None
                counts["described" if text else "empty"] += 1
            if time.monotonic() - last > save_every:
                _save(out, texts)
                last = time.monotonic()
    finally:  # a stopped run keeps what it described
        _save(out, texts)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m finetune.context generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True, help="folder of pictures (ids: paths relative to it)")
    ap.add_argument("--generator", type=Path, required=True, help="saved Hugging Face image-to-text model directory")
    ap.add_argument("--out", type=Path, required=True, help="contexts JSON file (resumed when it exists)")
    ap.add_argument("--prompt", default=None, help="default: Shap-CA's prompt for chat models, none for captioners")
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0: greedy (Shap-CA: 1.0)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--save-every", type=float, default=60.0, help="seconds between checkpoints of --out")
    a = ap.parse_args(argv)
    for flag, value in (("--max-new-tokens", a.max_new_tokens), ("--batch-size", a.batch_size)):
        if value < 1:
            raise MmieError(f"{flag} must be at least 1, got {value}")
    if a.temperature < 0:
        raise MmieError(f"--temperature must be >= 0, got {a.temperature}")
    gen = Generator(a.generator, a.prompt, a.temperature, a.max_new_tokens, a.device)
    counts = generate_contexts(a.images, gen, a.out, a.batch_size, a.save_every)
    print(f"contexts -> {a.out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v))
    print(json.dumps({"out": str(a.out), **dict(counts)}))
    return 0
