"""A small MNRE-format dataset whose relations the text alone tells (a trigger phrase between the two names), for
tests that relation learning works at all: unlike common.synthetic's MNRE (where the picture decides the
relation), a text model must get well above the majority class here within a few epochs."""
from __future__ import annotations

import random
from pathlib import Path

FIRST = ["Anna", "Boris", "Chen", "Dana", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Julia", "Kofi", "Lena"]
LAST = ["Novak", "Silva", "Okafor", "Berg", "Tanaka", "Russo", "Haddad", "Kowalski", "Moreau", "Lund"]
ORGS = ["Acme Corp", "Globex", "Initech", "Umbrella Labs", "Stark Industries", "Wayne Foods"]
PLACES = ["Lisbon", "Oslo", "Nairobi", "Kyoto", "Lima", "Tallinn", "Porto", "Quebec"]
AWARDS = ["Golden Globe", "Nobel Prize", "Ballon d'Or", "Pulitzer Prize"]

# (relation, tail pool, template): the phrase between {H} and {T} decides the relation
RELATIONS = [
    ("/per/org/member_of", ORGS, "{H} works for {T} since May"),
    ("/per/loc/place_of_residence", PLACES, "{H} lives in {T} with friends"),
    ("/per/per/peer", None, "{H} played tennis with {T} today"),
    ("/per/misc/awarded", AWARDS, "{H} won the {T} last night"),
    ("None", PLACES, "{H} posted a photo and {T} looked lovely"),
]


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _line(rng: random.Random, n: int) -> list[dict]:
    relation, pool, template = RELATIONS[n % len(RELATIONS)]
    head, tail = _person(rng), rng.choice(pool) if pool else _person(rng)
    before, _, rest = template.partition("{H}")
    between, _, after = rest.partition("{T}")
    pre = ["RT", f"@user{rng.randint(1, 99)}", ":"] if rng.random() < 0.5 else []
    tokens = pre + before.split() + head.split() + between.split()
    t0 = len(tokens)
    tokens += tail.split() + after.split()
    h = {"name": head, "pos": [len(pre) + len(before.split()), len(pre) + len(before.split()) + 2]}
    t = {"name": tail, "pos": [t0, t0 + len(tail.split())]}
    rows = [{"token": tokens, "h": h, "t": t, "img_id": f"rel_{n}.jpg", "relation": relation}]
    if relation != "None" and rng.random() < 0.5:  # the reversed pair: no relation
        rows.append({"token": tokens, "h": t, "t": h, "img_id": f"rel_{n}.jpg", "relation": "None"})
    return rows


def write_relation_text(out: Path, seed: int = 0, sizes: dict[str, int] | None = None) -> Path:
    """mnre_{train,val,test}.txt under `out` (sentences per split: 150 / 50 / 50 by default); no images."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for split, size in (sizes or {"train": 150, "val": 50, "test": 50}).items():
        lines = []
        for _ in range(size):
            lines += [repr(row) for row in _line(rng, n)]
            n += 1
        (out / f"mnre_{split}.txt").write_text("\n".join(lines) + "\n")
    return out
