"""Write the synthetic datasets in the real formats (NewsCLIPpings + VisualNews, Twitter-2015 MNER, MNRE-2).

Every item draws from its own `random.Random(f"{seed}:{dataset}:{split}:{index}")`, so the same seed gives
byte-identical files whatever the counts of the other datasets.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from common.synthetic import lexicon as lx
from common.synthetic.scenes import (DISTRACTORS, KEY_OBJECT_OF_TYPE, KINDS, Scene, jpeg_bytes, render,
                                     scene_with_key, sample_scene)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    news: int = 3000  # VisualNews items (images with their true captions); 2 annotations each
    twitter: int = 1500  # tweets over the three splits
    mnre: int = 1500  # MNRE sentences over the three splits
    image_size: int = 128
    image_resolved: float = 0.75  # share of main mentions whose type only the image tells


def _rng(cfg: SynthConfig, dataset: str, split: str, index: int) -> random.Random:
    return random.Random(f"{cfg.seed}:{dataset}:{split}:{index}")


def _split_counts(n: int) -> dict[str, int]:
    n_val = max(1, n // 10)
    return {"train": n - 2 * n_val, "val": n_val, "test": n_val}


def _write_image(path: Path, scene: Scene, rng: random.Random) -> None:
    path.write_bytes(jpeg_bytes(render(scene, rng)))


def _fill(template: str, rng: random.Random, **slots: str) -> list[str]:
    """Tokens of `template` with every {SLOT} replaced by its value's tokens (and {user} by a handle)."""
    tokens: list[str] = []
    for word in template.split():
        if word.startswith("{") and word.endswith("}") and word[1:-1] in slots:
            tokens.extend(slots[word[1:-1]].split())
        else:
            tokens.append(word.replace("{user}", rng.choice(lx.USERS)))
    return tokens


def _bio(tokens: list[str], start: int, n: int, etype: str, tags: list[str]) -> None:
    tag = lx.TWITTER_TAG[etype]
    tags[start] = f"B-{tag}"
    for k in range(start + 1, start + n):
        tags[k] = f"I-{tag}"


def _mention(rng: random.Random, template_pool: list[str], name: str, tokens_out: list[str], tags_out: list[str],
             etype: str) -> None:
    template = rng.choice(template_pool)
    before, _, after = template.partition("{E}")
    pre = _fill(before, rng)
    start = len(tokens_out) + len(pre)
    tokens_out.extend(pre + name.split() + _fill(after, rng))
    tags_out.extend(["O"] * (len(tokens_out) - len(tags_out)))
    _bio(tokens_out, start, len(name.split()), etype, tags_out)


def _tweet(cfg: SynthConfig, split: str, i: int):
    """One tweet: tokens, tags, scene, and how many of its mentions only the image resolves."""
    rng = _rng(cfg, "twitter", split, i)
    tokens: list[str] = []
    tags: list[str] = []
    etype = rng.choice(lx.TYPES)
    image_resolved = rng.random() < cfg.image_resolved
    if image_resolved:
        _mention(rng, lx.NEUTRAL_TEMPLATES, rng.choice(lx.AMBIGUOUS_NAMES), tokens, tags, etype)
    else:
        _mention(rng, lx.TYPED_TEMPLATES[etype], rng.choice(lx.TEXT_RESOLVED_NAMES[etype]), tokens, tags, etype)
    mentions = [(etype, image_resolved)]
    if rng.random() < 0.4:  # a second, text-resolved mention; its type's key object is not drawn
        etype2 = rng.choice(lx.TYPES)
        tokens.append("|")
        tags.append("O")
        _mention(rng, lx.TYPED_TEMPLATES[etype2], rng.choice(lx.TEXT_RESOLVED_NAMES[etype2]), tokens, tags, etype2)
        mentions.append((etype2, False))
    scene = scene_with_key(rng, cfg.image_size, [KEY_OBJECT_OF_TYPE[etype]])
    return tokens, tags, scene, mentions, rng


def _text_only_ceiling(labels_image_resolved: list[str], n_text_resolved: int) -> float:
    """Best accuracy a text-only model can reach: the image-resolved labels were drawn independently of the text,
    so on them nothing beats predicting the most frequent label; the text-resolved ones it can get all right."""
    n = len(labels_image_resolved) + n_text_resolved
    if n == 0:
        return 0.0
    majority = Counter(labels_image_resolved).most_common(1)[0][1] if labels_image_resolved else 0
    return (n_text_resolved + majority) / n


def write_twitter(cfg: SynthConfig, out: Path) -> dict:
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    stats = {}
    file_of = {"train": "train.txt", "val": "valid.txt", "test": "test.txt"}
    for s, (split, n) in enumerate(_split_counts(cfg.twitter).items()):
        lines, amb_labels, n_text = [], [], 0
        for i in range(n):
            tokens, tags, scene, mentions, rng = _tweet(cfg, split, i)
            img_id = str(100000 * (s + 1) + i)
            _write_image(img_dir / f"{img_id}.jpg", scene, rng)
            lines.append(f"IMGID:{img_id}")
            lines.extend(f"{tok}\t{tag}" for tok, tag in zip(tokens, tags))
            lines.append("")
            for etype, resolved_by_image in mentions:
                if resolved_by_image:
                    amb_labels.append(etype)
                else:
                    n_text += 1
        (out / file_of[split]).write_text("\n".join(lines) + "\n")
        stats[split] = {"tweets": n, "entities": len(amb_labels) + n_text, "image_resolved": len(amb_labels),
                        "text_only_ceiling": round(_text_only_ceiling(amb_labels, n_text), 4)}
    return stats


def write_mnre(cfg: SynthConfig, out: Path) -> dict:
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    relation_keys = list(lx.RELATION_OF_KEY_OBJECT)
    stats = {}
    for split, n in _split_counts(cfg.mnre).items():
        lines, labels, image_resolved, n_text = [], [], [], 0
        for i in range(n):
            rng = _rng(cfg, "mnre", split, i)
            head, tail = rng.sample(lx.AMBIGUOUS_NAMES, 2)
            template = rng.choice(lx.RELATION_TEMPLATES)
            h_pre = _fill(template.partition("{H}")[0], rng)
            between = _fill(template.partition("{H}")[2].partition("{T}")[0], rng)
            after = _fill(template.partition("{T}")[2], rng)
            tokens = h_pre + head.split() + between + tail.split() + after
            h_pos = [len(h_pre), len(h_pre) + len(head.split())]
            t_start = h_pos[1] + len(between)
            t_pos = [t_start, t_start + len(tail.split())]
            # one in five scenes holds no key object: relation None
            key = rng.choice(relation_keys + [None])
            if key is None:
                scene = sample_scene(rng, cfg.image_size, rng.sample(DISTRACTORS, rng.randint(1, 3)))
                relation = "None"
            else:
                scene = scene_with_key(rng, cfg.image_size, [key])
                relation = lx.RELATION_OF_KEY_OBJECT[key]
            img_id = f"syn_{split}_{i}.jpg"
            _write_image(img_dir / img_id, scene, rng)
            h = {"name": head, "pos": h_pos}
            t = {"name": tail, "pos": t_pos}
            lines.append(repr({"token": tokens, "h": h, "t": t, "img_id": img_id, "relation": relation}))
            labels.append(relation)
            image_resolved.append(relation)
            if rng.random() < 0.3:  # the reversed pair, as MNRE lists several pairs of one sentence
                lines.append(repr({"token": tokens, "h": t, "t": h, "img_id": img_id, "relation": "None"}))
                labels.append("None")
                n_text += 1  # head after tail: always None, which the text alone tells
        (out / f"mnre_{split}.txt").write_text("\n".join(lines) + "\n")
        stats[split] = {"lines": len(lines), "sentences": n, "relations": dict(sorted(Counter(labels).items())),
                        "text_only_ceiling": round(_text_only_ceiling(image_resolved, n_text), 4)}
    return stats


def _caption(rng: random.Random, scene: Scene) -> str:
    names = " and ".join(rng.sample(lx.AMBIGUOUS_NAMES + lx.TEXT_RESOLVED_NAMES["PER"], rng.randint(1, 2)))
    nouns = [lx.NOUN_OF_KIND[k] for k in scene.kinds]
    objects = nouns[0] if len(nouns) == 1 else ", ".join(nouns[:-1]) + " and " + nouns[-1]
    template = rng.choice(lx.CAPTION_TEMPLATES)
    return template.format(names=names, objects=objects, place=rng.choice(lx.PLACES))


def write_newsclippings(cfg: SynthConfig, out: Path) -> dict:
    """VisualNews-style data.json + images, NewsCLIPpings annotations (pristine pair, then its falsified pair)."""
    img_dir = out / "images"
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(parents=True, exist_ok=True)
    entries, objects, stats = [], {}, {}
    next_id = 0
    for split, n in _split_counts(cfg.news).items():
        ids, kinds_of = [], {}
        for i in range(n):
            rng = _rng(cfg, "news", split, i)
            scene = sample_scene(rng, cfg.image_size, rng.sample(KINDS, rng.randint(1, 3)))
            item_id = next_id
            next_id += 1
            _write_image(img_dir / f"{item_id}.jpg", scene, rng)
            entries.append({"id": item_id, "source": "synthetic", "topic": "scenes", "caption": _caption(rng, scene),
                            "image_path": f"./images/{item_id}.jpg", "article_path": None})
            objects[str(item_id)] = [{"kind": o.kind, "box": list(o.box)} for o in scene.objects]
            ids.append(item_id)
            kinds_of[item_id] = set(scene.kinds)
        annotations = []
        for i, item_id in enumerate(ids):
            rng = _rng(cfg, "news-pairs", split, i)
            score = round(rng.uniform(0.6, 0.95), 4)
            annotations.append({"id": item_id, "image_id": item_id, "similarity_score": score,
                                "falsified": False, "source_dataset": 0})
            # the falsified image: another item of the split, sharing as few object kinds as possible
            candidates = rng.sample(ids, min(8, len(ids)))
            other = min((c for c in candidates if c != item_id), key=lambda c: len(kinds_of[c] & kinds_of[item_id]),
                        default=item_id)
            annotations.append({"id": item_id, "image_id": other, "similarity_score": round(rng.uniform(0.3, 0.7), 4),
                                "falsified": True, "source_dataset": 0})
        (out / "annotations" / f"{split}.json").write_text(json.dumps({"annotations": annotations}, indent=1))
        stats[split] = {"pairs": len(annotations), "images": n}
    (out / "data.json").write_text(json.dumps(entries, indent=1))
    (out / "objects.json").write_text(json.dumps({"kinds": list(KINDS), "objects": objects}))
    return stats


def generate(cfg: SynthConfig, out: str | Path) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stats = {
        "config": cfg.__dict__,
        "newsclippings": write_newsclippings(cfg, out / "newsclippings"),
        "twitter": write_twitter(cfg, out / "twitter"),
        "mnre": write_mnre(cfg, out / "mnre"),
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats
