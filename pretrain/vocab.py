"""Entity vocabulary (the top-M spaCy nouns of the captions) and relation vocabulary (a shipped list of
Wikidata-style names, or your own file)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from tqdm import tqdm

from common.errors import DataError
from common.zoo import load_spacy

DEFAULT_RELATIONS = Path(__file__).with_name("relations.txt")


def entity_vocab(captions: list[str], top_m: int = 1000, spacy_model: str = "auto") -> list[str]:
    """The `top_m` most frequent noun lemmas (lower-cased, alphabetic, 2+ letters); ties broken alphabetically."""
    nlp = load_spacy(spacy_model, disable=("parser", "ner"))
    counts: Counter = Counter()
    for doc in tqdm(nlp.pipe(captions, batch_size=256), total=len(captions), desc="spaCy nouns", leave=False):
        counts.update(t.lemma_.lower() for t in doc if t.pos_ == "NOUN" and t.is_alpha and len(t) > 1)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [w for w, _ in ranked[:top_m]]


def relation_vocab(path: Path = DEFAULT_RELATIONS) -> list[str]:
    if not path.is_file():
        raise DataError(f"relation vocabulary file {path} does not exist")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if len(set(names)) != len(names):
        dup = next(n for n, c in Counter(names).items() if c > 1)
        raise DataError(f"{path}: relation {dup!r} is listed twice")
    if not names:
        raise DataError(f"{path}: no relation names")
    return names
