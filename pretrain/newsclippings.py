"""NewsCLIPpings reader: annotation pairs + VisualNews-style data.json -> (caption, image, match) pairs.

Each annotation {"id", "image_id", "similarity_score", "falsified", "source_dataset"} pairs the caption of
VisualNews item `id` with the image of item `image_id`; `falsified` false means a matched pair (label 1).
A malformed top-level file is a one-line error; a bad entry is skipped and counted by reason."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from common.errors import DataError

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
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def load_visualnews(path: Path) -> dict[str, dict]:
    data = _load_json(path, "VisualNews data file")
    if isinstance(data, dict):  # some releases key the items by id
        data = [dict(v, id=v.get("id", k)) for k, v in data.items()]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of VisualNews items")
    return {str(item["id"]): item for item in data if isinstance(item, dict) and "id" in item}


def read_pairs(annotations: Path, data_json: Path, images: Path) -> tuple[list[Pair], Counter]:
    ann = _load_json(annotations, "annotation file")
    if not isinstance(ann, dict) or not isinstance(ann.get("annotations"), list):
        raise DataError(f"{annotations}: expected {{\"annotations\": [...]}} (NewsCLIPpings format)")
    items = load_visualnews(data_json)
    pairs, skipped = [], Counter()
    for i, a in enumerate(ann["annotations"]):
        if not isinstance(a, dict) or any(k not in a for k in ANNOTATION_KEYS):
            skipped["malformed annotation"] += 1
            continue
        cap_item, img_item = items.get(str(a["id"])), items.get(str(a["image_id"]))
        if cap_item is None or not str(cap_item.get("caption") or "").strip():
            skipped["caption missing from data.json"] += 1
            continue
        if img_item is None or not img_item.get("image_path"):
            skipped["image missing from data.json"] += 1
            continue
        pairs.append(Pair(i, " ".join(str(cap_item["caption"]).split()), images / img_item["image_path"],
                          0 if a["falsified"] else 1, str(a["id"]), str(a["image_id"]),
                          float(a.get("similarity_score") or 0.0)))
    return pairs, skipped
