"""python -m finetune.mjere --from-mnre DIR --out DIR — derive the joint (MJERE) dataset from MNRE-2.

Consecutive MNRE lines with identical tokens form one sentence (a `None` line between them ends the run); `None`
pairs are dropped; each remaining pair becomes a triple whose entity types come from its relation label
(/per/org/member_of -> PER head, ORG tail). Written in EEGA's JSON format. On MNRE-2 this gives 3,618 / 496 / 475
sentences and 4,503 / 624 / 640 triples (the MJERE paper: 3,617 / 495 / 474 sentences).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.errors import cli_main
from finetune.examples import Example
from finetune.labels import NONE_RELATION
from finetune.readers import MNRE_FILES, find_split_file, read_mnre

_TYPE = {"per": "PER", "org": "ORG", "loc": "LOC", "misc": "MISC"}
OUT_FILES = {"train": "train.json", "dev": "val.json", "test": "test.json"}


def _entity(ex: Example, span, etype: str) -> dict:
    return {"name": " ".join(ex.tokens[span.start:span.end]), "pos": [span.start, span.end], "tags": etype}


def group_sentences(examples: list[Example]) -> list[list[Example]]:
    """Runs of consecutive non-None pairs over identical tokens."""
    groups: list[list[Example]] = []
    prev: Example | None = None
    for ex in examples:
        if ex.triples[0].label == NONE_RELATION:
            prev = None
            continue
        if prev is not None and prev.tokens == ex.tokens:
            groups[-1].append(ex)
        else:
            groups.append([ex])
        prev = ex
    return groups


def to_eega(group: list[Example]) -> dict:
    first = group[0]
    labels = []
    for ex in group:
        triple = ex.triples[0]
        _, head_type, tail_type, name = triple.label.split("/", 3)
        labels.append([{"beg_ent": _entity(ex, triple.head, _TYPE[head_type]),
                        "sec_ent": _entity(ex, triple.tail, _TYPE[tail_type]), "relation": name}])
    return {"token": first.tokens, "img_id": first.image, "label_list": labels}


def build_from_mnre(src: Path, out: Path) -> dict[str, dict[str, int]]:
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, name in OUT_FILES.items():
        mnre = read_mnre(find_split_file(src, split, MNRE_FILES), split)
        sentences = [to_eega(g) for g in group_sentences(mnre.examples)]
        (out / name).write_text(json.dumps(sentences, ensure_ascii=False) + "\n", encoding="utf-8")
        counts[split] = {"sentences": len(sentences), "triples": sum(len(s["label_list"]) for s in sentences),
                         "skipped_mnre_lines": sum(mnre.skipped.values())}
    images = out / "images"
    if (src / "images").is_dir() and not images.exists():  # the same pictures: link, do not copy
        images.symlink_to((src / "images").resolve(), target_is_directory=True)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m finetune.mjere", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from-mnre", type=Path, required=True, help="directory with mnre_{train,val,test}.txt")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    counts = build_from_mnre(a.from_mnre, a.out)
    for split, c in counts.items():
        print(f"{split:5s} {c['sentences']:5d} sentences {c['triples']:5d} triples -> {a.out / OUT_FILES[split]}")
    return 0


if __name__ == "__main__":
    cli_main(main)
