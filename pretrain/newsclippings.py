"""NewsCLIPpings reader: annotation pairs + VisualNews-style data.json -> (caption, image, match) pairs.

Each annotation {"id", "image_id", "similarity_score", "falsified", "source_dataset"} pairs the caption of
VisualNews item `id` with the image of item `image_id`; `falsified` false means a matched pair (label 1).
A malformed top-level file is a one-line error; a bad entry is skipped and counted by reason."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from common.errors import DataError
from common.jsonfile import load_json

ANNOTATION_KEYS = ("id", "image_id", "falsified")


@dataclass(frozen=True)
class Pair:
    index: int  # position in the annotation file
    caption: str
    image_path: Path
    match: int  # 1 pristine, 0 falsified
    caption_id: str
    image_id: str
    similarity: float


def _load_json(path: Path, what: str):
    return load_json(path, f"{what} {path} does not exist", f"{path}: not valid JSON")


def load_visualnews(path: Path, skipped: Counter | None = None) -> dict[str, dict]:
    """id -> item. An entry that is not an object with an id is skipped and counted (in `skipped`); two entries
    with one id are an error (which caption and picture belong to it would be a guess)."""
    data = _load_json(path, "VisualNews data file")
    if isinstance(data, dict):  # some releases key the items by id
        data = [dict(v, id=v.get("id", k)) if isinstance(v, dict) else v for k, v in data.items()]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of VisualNews items")
    items: dict[str, dict] = {}
    for n, item in enumerate(data):
        if not isinstance(item, dict) or "id" not in item:
            if skipped is not None:
                skipped["data.json entry not an object with an id"] += 1
            continue
        key = str(item["id"])
        if key in items:
            raise DataError(f"{path}: item {n}: id {key!r} appears twice in data.json")
        items[key] = item
    return items


def _match(value) -> int | None:
    """falsified -> match label (1 pristine, 0 falsified); None for anything but a boolean or 0/1."""
    if isinstance(value, bool) or value in (0, 1):
        return 0 if value else 1
    return None


def _similarity(value) -> float | None:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def read_pairs(annotations: Path, data_json: Path, images: Path) -> tuple[list[Pair], Counter]:
    ann = _load_json(annotations, "annotation file")
    if not isinstance(ann, dict) or not isinstance(ann.get("annotations"), list):
        raise DataError(f"{annotations}: expected {{\"annotations\": [...]}} (NewsCLIPpings format)")
    pairs, skipped = [], Counter()
    items = load_visualnews(data_json, skipped)
    for i, a in enumerate(ann["annotations"]):
        if not isinstance(a, dict) or any(k not in a for k in ANNOTATION_KEYS):
            skipped["malformed annotation"] += 1
            continue
        match, similarity = _match(a["falsified"]), _similarity(a.get("similarity_score"))
        if match is None or similarity is None:  # e.g. "falsified": "false", a similarity given as text
            skipped["malformed annotation"] += 1
            continue
        cap_item, img_item = items.get(str(a["id"])), items.get(str(a["image_id"]))
        if cap_item is None or not isinstance(cap_item.get("caption"), str) or not cap_item["caption"].strip():
            skipped["caption missing from data.json"] += 1
            continue
        if img_item is None or not isinstance(img_item.get("image_path"), str) or not img_item["image_path"]:
            skipped["image missing from data.json"] += 1
            continue
        pairs.append(Pair(i, " ".join(cap_item["caption"].split()), images / img_item["image_path"], match,
                          str(a["id"]), str(a["image_id"]), similarity))
    return pairs, skipped
