"""Visually distinct glyph objects drawn with PIL primitives. Each `draw_*` fills the box (x0, y0, x1, y1)."""
from __future__ import annotations

import random
from typing import Callable

from PIL import ImageDraw

Box = tuple[int, int, int, int]


def _lerp(box: Box, fx: float, fy: float) -> tuple[int, int]:
    x0, y0, x1, y1 = box
    return int(x0 + fx * (x1 - x0)), int(y0 + fy * (y1 - y0))


def _rect(d: ImageDraw.ImageDraw, box: Box, a: tuple[float, float], b: tuple[float, float], fill) -> None:
    d.rectangle([_lerp(box, *a), _lerp(box, *b)], fill=fill)


def _ellipse(d: ImageDraw.ImageDraw, box: Box, a: tuple[float, float], b: tuple[float, float], fill) -> None:
    d.ellipse([_lerp(box, *a), _lerp(box, *b)], fill=fill)


def draw_person(d, box, rng):
    shirt = rng.choice([(200, 40, 40), (40, 80, 200), (30, 150, 60), (230, 180, 0)])
    _ellipse(d, box, (0.33, 0.0), (0.67, 0.28), (240, 200, 160))  # head
    _rect(d, box, (0.25, 0.28), (0.75, 0.65), shirt)  # torso
    _rect(d, box, (0.30, 0.65), (0.46, 1.0), (40, 40, 60))  # legs
    _rect(d, box, (0.54, 0.65), (0.70, 1.0), (40, 40, 60))


def draw_dog(d, box, rng):
    fur = rng.choice([(140, 90, 40), (90, 60, 30), (200, 160, 90)])
    _ellipse(d, box, (0.15, 0.35), (0.8, 0.75), fur)  # body
    _ellipse(d, box, (0.65, 0.15), (1.0, 0.5), fur)  # head
    for fx in (0.2, 0.35, 0.55, 0.7):
        _rect(d, box, (fx, 0.7), (fx + 0.08, 1.0), fur)
    d.line([_lerp(box, 0.18, 0.45), _lerp(box, 0.0, 0.2)], fill=fur, width=3)  # tail
    _ellipse(d, box, (0.85, 0.25), (0.92, 0.32), (0, 0, 0))  # eye


def draw_car(d, box, rng):
    body = rng.choice([(210, 20, 20), (20, 20, 210), (240, 240, 240)])
    _rect(d, box, (0.0, 0.45), (1.0, 0.8), body)
    _rect(d, box, (0.2, 0.2), (0.75, 0.45), body)
    _rect(d, box, (0.27, 0.26), (0.68, 0.43), (170, 220, 255))  # windows
    _ellipse(d, box, (0.1, 0.68), (0.32, 1.0), (20, 20, 20))
    _ellipse(d, box, (0.68, 0.68), (0.9, 1.0), (20, 20, 20))


def draw_building(d, box, rng):
    wall = rng.choice([(150, 150, 160), (170, 120, 90), (120, 130, 150)])
    _rect(d, box, (0.1, 0.0), (0.9, 1.0), wall)
    for row in range(5):
        for col in range(3):
            fx, fy = 0.18 + col * 0.24, 0.06 + row * 0.18
            _rect(d, box, (fx, fy), (fx + 0.14, fy + 0.1), (255, 240, 130))


def draw_flag(d, box, rng):
    stripes = rng.choice([[(200, 0, 0), (255, 255, 255), (0, 0, 200)], [(0, 140, 0), (255, 255, 255), (255, 120, 0)],
                          [(0, 0, 0), (220, 0, 0), (255, 210, 0)]])
    _rect(d, box, (0.05, 0.0), (0.12, 1.0), (90, 70, 50))  # pole
    for i, colour in enumerate(stripes):
        _rect(d, box, (0.12, 0.05 + i * 0.15), (0.95, 0.2 + i * 0.15), colour)


def draw_trophy(d, box, rng):
    gold = (230, 190, 30)
    d.polygon([_lerp(box, 0.15, 0.0), _lerp(box, 0.85, 0.0), _lerp(box, 0.6, 0.5), _lerp(box, 0.4, 0.5)], fill=gold)
    _ellipse(d, box, (0.0, 0.05), (0.25, 0.3), gold)  # handles
    _ellipse(d, box, (0.75, 0.05), (1.0, 0.3), gold)
    _rect(d, box, (0.45, 0.5), (0.55, 0.8), gold)  # stem
    _rect(d, box, (0.25, 0.8), (0.75, 1.0), (110, 70, 30))  # base


def draw_ball(d, box, rng):
    _ellipse(d, box, (0.1, 0.1), (0.9, 0.9), (250, 250, 250))
    for fx, fy in ((0.45, 0.4), (0.25, 0.25), (0.65, 0.25), (0.3, 0.62), (0.6, 0.62)):
        _ellipse(d, box, (fx, fy), (fx + 0.14, fy + 0.14), (20, 20, 20))


def draw_tree(d, box, rng):
    _rect(d, box, (0.42, 0.55), (0.58, 1.0), (100, 60, 20))
    _ellipse(d, box, (0.05, 0.0), (0.95, 0.65), rng.choice([(20, 120, 30), (60, 160, 40)]))


def draw_boat(d, box, rng):
    d.polygon([_lerp(box, 0.0, 0.65), _lerp(box, 1.0, 0.65), _lerp(box, 0.8, 1.0), _lerp(box, 0.2, 1.0)],
              fill=(30, 60, 140))
    _rect(d, box, (0.48, 0.05), (0.52, 0.65), (80, 60, 40))
    d.polygon([_lerp(box, 0.52, 0.05), _lerp(box, 0.52, 0.6), _lerp(box, 0.9, 0.6)], fill=(250, 250, 240))


def draw_plane(d, box, rng):
    silver = (190, 195, 205)
    _ellipse(d, box, (0.0, 0.4), (1.0, 0.6), silver)  # fuselage
    d.polygon([_lerp(box, 0.35, 0.5), _lerp(box, 0.55, 0.5), _lerp(box, 0.45, 0.0)], fill=silver)  # wings
    d.polygon([_lerp(box, 0.35, 0.5), _lerp(box, 0.55, 0.5), _lerp(box, 0.45, 1.0)], fill=silver)
    _rect(d, box, (0.0, 0.25), (0.08, 0.5), (200, 30, 30))  # tail


GLYPHS: dict[str, Callable[[ImageDraw.ImageDraw, Box, random.Random], None]] = {
    "person": draw_person, "dog": draw_dog, "car": draw_car, "building": draw_building, "flag": draw_flag,
    "trophy": draw_trophy, "ball": draw_ball, "tree": draw_tree, "boat": draw_boat, "plane": draw_plane,
}
