"""Scenes of 1-3 glyph objects on a simple background, rendered to RGB images with known boxes."""
from __future__ import annotations

import io
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from common.synthetic.glyphs import GLYPHS

# The object kinds that decide an ambiguous mention's entity type; every other kind is a distractor.
TYPE_OF_KEY_OBJECT = {"person": "PER", "flag": "LOC", "building": "ORG", "trophy": "MISC"}
KEY_OBJECT_OF_TYPE = {t: k for k, t in TYPE_OF_KEY_OBJECT.items()}
DISTRACTORS = ("dog", "car", "ball", "tree", "boat", "plane")
KINDS = tuple(GLYPHS)


@dataclass(frozen=True)
class SceneObject:
    kind: str
    box: tuple[int, int, int, int]  # pixels, x0 y0 x1 y1 (exclusive max)


@dataclass(frozen=True)
class Scene:
    size: int
    background: tuple[tuple[int, int, int], tuple[int, int, int]]  # sky, ground
    objects: tuple[SceneObject, ...]

    @property
    def kinds(self) -> list[str]:
        return [o.kind for o in self.objects]


def sample_scene(rng: random.Random, size: int, kinds: list[str]) -> Scene:
    """Place `kinds` (1-3 objects) left to right in disjoint slots, with random scale and offset."""
    if not 1 <= len(kinds) <= 3:
        raise ValueError(f"a scene holds 1-3 objects, got {len(kinds)}")
    kinds = list(kinds)
    rng.shuffle(kinds)
    slot = size // len(kinds)
    objects = []
    for i, kind in enumerate(kinds):
        w = int(slot * rng.uniform(0.6, 0.95))
        h = int(size * rng.uniform(0.4, 0.75))
        w = min(w, h + h // 2)  # keep glyphs from being stretched flat
        x0 = i * slot + rng.randint(0, slot - w)
        y0 = rng.randint(size // 8, size - h)
        objects.append(SceneObject(kind, (x0, y0, x0 + w, y0 + h)))
    sky = (rng.randint(150, 210), rng.randint(190, 230), rng.randint(220, 255))
    ground = (rng.randint(60, 120), rng.randint(120, 170), rng.randint(50, 90))
    return Scene(size, (sky, ground), tuple(objects))


def render(scene: Scene, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (scene.size, scene.size), scene.background[0])
    d = ImageDraw.Draw(img)
    d.rectangle([0, int(scene.size * 0.7), scene.size, scene.size], fill=scene.background[1])
    for obj in scene.objects:
        GLYPHS[obj.kind](d, obj.box, rng)
    return img


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def scene_with_key(rng: random.Random, size: int, key_kinds: list[str], max_objects: int = 3) -> Scene:
    """A scene holding every kind in `key_kinds` plus random distractors up to `max_objects` objects."""
    n_extra = rng.randint(0, max(0, max_objects - len(key_kinds)))
    return sample_scene(rng, size, list(key_kinds) + rng.sample(DISTRACTORS, n_extra))
