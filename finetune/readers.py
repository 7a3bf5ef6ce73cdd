"""Readers for the real dataset formats. Structural problems raise DataError naming file and line; items that can
be dropped safely (an empty tweet, an MNRE span outside its sentence, an empty sentence) are skipped and counted
in `Split.skipped`.

- Twitter-2015/2017 MNER: `IMGID:<id>` line, then `token<TAB>tag` lines, blank line between tweets. OTHER -> MISC.
- MNRE-2: one Python dict literal per line (`token`, `h`/`t` with `name` and end-exclusive `pos`, `img_id`,
  `relation`). The validation file may be named `mnre_val.txt` or, as upstream ships it, `mnre_val .txt`.
- MJERE: EEGA's JSON list of {"token", "img_id", "label_list": [[{"beg_ent", "sec_ent", "relation"}], ...]},
  entities as {"name", "pos", "tags"}.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

from common.errors import DataError
from finetune.examples import Example, Span, Split, Triple
from finetune.labels import ENTITY_TYPES, MNRE_RELATIONS, NONE_RELATION, TAG_TYPES

TWITTER_FILES = {"train": ("train.txt",), "dev": ("valid.txt", "dev.txt"), "test": ("test.txt",)}
MNRE_FILES = {"train": ("mnre_train.txt",), "dev": ("mnre_val.txt", "mnre_val .txt", "mnre_dev.txt"),
              "test": ("mnre_test.txt",)}
MJERE_FILES = {"train": ("train.json",), "dev": ("val.json", "dev.json", "valid.json"), "test": ("test.json",)}



def find_split_file(root: Path, split: str, names: dict[str, tuple[str, ...]]) -> Path:
    for name in names[split]:
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: no {split} file (looked for {', '.join(repr(n) for n in names[split])})")


def _lines(path: Path):
    """(line number, text) pairs; a line that is not UTF-8 is an error naming file and line."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8").rstrip("\r\n")  # a leading BOM is no word
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{n}: not UTF-8 ({e.reason} at byte {e.start})") from None


def tags_to_spans(tags: list[str]) -> list[Span]:
    """Entity spans under seqeval's default (lenient) chunking: an I- tag after O or another type starts one."""
    from seqeval.metrics.sequence_labeling import get_entities

    return [Span(s, e + 1, t) for t, s, e in get_entities(list(tags))]


def _normalise_tag(tag: str, path: Path, n: int) -> str:
    if tag == "O":
        return tag
    prefix, _, etype = tag.partition("-")
    if prefix not in ("B", "I") or etype not in TAG_TYPES:
        raise DataError(f"{path}:{n}: tag {tag!r} is outside the scheme (O, B-/I- of PER, LOC, ORG, MISC/OTHER)")
    return f"{prefix}-{TAG_TYPES[etype]}"


def read_twitter(path: Path, split: str = "") -> Split:
    examples: list[Example] = []
    out = Split(split or path.stem, path, examples)
    current: dict | None = None

    def close():
        if current is None:
            return
        if not current["tokens"]:
            out.skipped["empty tweet"] += 1
            return
        tags = current["tags"]
        examples.append(Example(uid=f"{path.name}:{current['line']}", tokens=current["tokens"],
                                image=f"{current['img']}.jpg", tags=tags, entities=tags_to_spans(tags)))

    for n, line in _lines(path):
        if line.startswith("IMGID:"):
            close()
            current = {"img": line[len("IMGID:"):].strip(), "line": n, "tokens": [], "tags": []}
        elif not line.strip():
            close()
            current = None
        else:
            if "\t" not in line:
                raise DataError(f"{path}:{n}: expected 'token<TAB>tag', got {line[:60]!r}")
            if current is None:
                raise DataError(f"{path}:{n}: token line outside a tweet (no IMGID: line before it)")
            token, tag = line.rsplit("\t", 1)
            if not token:  # (a whitespace-only token is a word: Twitter-2015's valid.txt has a lone no-break space)
                raise DataError(f"{path}:{n}: empty token before the tag {tag.strip()!r}")
            current["tokens"].append(token)
            current["tags"].append(_normalise_tag(tag.strip(), path, n))
    close()
    return out


def _tokens(value, where: str) -> list[str]:
    """A sentence's words: a list of strings (a string would be split into characters, so it is an error)."""
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise DataError(f"{where}: field token: expected a list of strings, got {_show(value)}")
    return value


def _show(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _span(entity, where: str, field: str, n_tokens: int) -> Span | None:
    """An entity's end-exclusive word span from its "pos" [start, end] (integers); None when outside the words."""
    pos = entity.get("pos") if isinstance(entity, dict) else None
    if not isinstance(entity, dict) or not isinstance(pos, (list, tuple)) or len(pos) != 2 or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in pos):
        got = _show(pos) if isinstance(entity, dict) else _show(entity)
        raise DataError(f"{where}: field {field}: expected an object whose pos is [start, end] integers, got {got}")
    s, e = pos
    return Span(s, e) if 0 <= s < e <= n_tokens else None


def read_mnre(path: Path, split: str = "") -> Split:
    examples: list[Example] = []
    out = Split(split or path.stem, path, examples)
    for n, line in _lines(path):
        if not line.strip():
            continue
        try:
            d = ast.literal_eval(line)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # TypeError: {[1]: 2}
            raise DataError(f"{path}:{n}: not a Python dict literal") from None
        if not isinstance(d, dict) or not {"token", "h", "t", "relation"} <= set(d):
            raise DataError(f"{path}:{n}: expected a dict with token, h, t, img_id, relation")
        if d["relation"] not in MNRE_RELATIONS:
            raise DataError(f"{path}:{n}: unknown relation label {d['relation']!r}")
        where = f"{path}:{n}"
        tokens = _tokens(d["token"], where)
        if not tokens:
            out.skipped["empty sentence"] += 1
            continue
        h, t = _span(d["h"], where, "h", len(tokens)), _span(d["t"], where, "t", len(tokens))
        if h is None or t is None:
            out.skipped["span outside the tokens"] += 1
            continue
        examples.append(Example(uid=f"{path.name}:{n}", tokens=tokens, image=str(d.get("img_id", "")),
                                entities=[h, t], triples=[Triple(h, t, d["relation"])]))
    return out


def _mjere_entity(ent, n_tokens: int, where: str, field: str) -> Span | None:
    span = _span(ent, where, field, n_tokens)
    etype = TAG_TYPES.get(str(ent.get("tags", "")).upper())
    if etype is None:
        raise DataError(f"{where}: field {field}.tags: entity type {ent.get('tags')!r} is not one of "
                        f"{', '.join(ENTITY_TYPES)}")
    return None if span is None else Span(span.start, span.end, etype)


def read_mjere(path: Path, split: str = "") -> Split:
    try:
        packs = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a JSON file in EEGA's MJERE format ({e})") from None
    if not isinstance(packs, list):
        raise DataError(f"{path}: expected a JSON list of sentences")
    examples: list[Example] = []
    out = Split(split or path.stem, path, examples)
    for i, pack in enumerate(packs):
        where = f"{path}: sentence {i}"
        if not isinstance(pack, dict):
            raise DataError(f"{where}: expected an object with token, img_id, label_list, got {_show(pack)}")
        tokens = _tokens(pack.get("token", []), where)
        if not tokens:
            out.skipped["empty sentence"] += 1
            continue
        triples, entities = [], set()
        labels = pack.get("label_list", [])
        if not isinstance(labels, list):
            raise DataError(f"{where}: field label_list: expected a list, got {_show(labels)}")
        for k, item in enumerate(labels):
            triple = item[0] if isinstance(item, list) and item else item
            at = f"{where}, label {k}"
            if not isinstance(triple, dict) or not {"beg_ent", "sec_ent", "relation"} <= set(triple):
                raise DataError(f"{at}: expected an object with beg_ent, sec_ent, relation, got {_show(triple)}")
            if not isinstance(triple["relation"], str) or not triple["relation"]:
                raise DataError(f"{at}: field relation: expected a name, got {_show(triple['relation'])}")
            head = _mjere_entity(triple["beg_ent"], len(tokens), at, "beg_ent")
            tail = _mjere_entity(triple["sec_ent"], len(tokens), at, "sec_ent")
            if head is None or tail is None:
                out.skipped["span outside the tokens"] += 1
                continue
            triples.append(Triple(head, tail, triple["relation"]))
            entities.update((head, tail))
        examples.append(Example(uid=f"{path.name}:{i}", tokens=tokens, image=str(pack.get("img_id", "")),
                                entities=sorted(entities), triples=triples))
    return out


READERS = {"mner": (read_twitter, TWITTER_FILES), "mre": (read_mnre, MNRE_FILES), "mjere": (read_mjere, MJERE_FILES)}


def read_task(task: str, root: str | Path) -> dict[str, Split]:
    """All three splits of `task` from a directory in the real layout: {"train", "dev", "test"} -> Split."""
    if task not in READERS:
        raise DataError(f"unknown task {task!r}: use one of {', '.join(READERS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist")
    reader, names = READERS[task]
    return {split: reader(find_split_file(root, split, names), split) for split in ("train", "dev", "test")}


__all__ = ["read_twitter", "read_mnre", "read_mjere", "read_task", "tags_to_spans", "MNRE_RELATIONS",
           "NONE_RELATION"]
