"""Word tags from spaCy, aligned to the dataset's own tokens (spaCy never re-tokenises them), cached on disk by the
sentence's tokens so each sentence is tagged once: part-of-speech tags, and (head.spacy_entities) spaCy's own
entity guess per word as BIO over its OntoNotes types (PERSON, GPE, NORP, WORK_OF_ART, ...), which it reads from
the cased words with a tagger trained on news and web text: knowledge the uncased sub-word encoder does not have."""
from __future__ import annotations

import hashlib
from pathlib import Path

from tqdm import tqdm

from common.jsonfile import write_json
from common.offline import cache_dir, read_cache
from common.zoo import load_spacy

UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
        "SCONJ", "SYM", "VERB", "X", "SPACE")
POS_INDEX = {tag: i + 1 for i, tag in enumerate(UPOS)}  # 0 is padding / unknown
# the English pipelines' NER labels (OntoNotes 5); a label outside them (another pipeline) maps to 0, like padding
ENT_LABELS = ("CARDINAL", "DATE", "EVENT", "FAC", "GPE", "LANGUAGE", "LAW", "LOC", "MONEY", "NORP", "ORDINAL",
              "ORG", "PERCENT", "PERSON", "PRODUCT", "QUANTITY", "TIME", "WORK_OF_ART")
ENT_TAGS = ("O",) + tuple(f"{p}-{label}" for label in ENT_LABELS for p in "BI")
ENT_INDEX = {tag: i + 1 for i, tag in enumerate(ENT_TAGS)}  # 0 is padding / unknown


def _key(tokens: list[str]) -> str:
    return hashlib.sha1("\x1f".join(tokens).encode()).hexdigest()


def _valid(v) -> bool:
    return isinstance(v, list) and all(isinstance(t, str) for t in v)


class PosTagger:
    # each kind of tag: the pipes it does without, how it reads a token, its progress-bar label
    KINDS = {"pos": (("parser", "ner", "lemmatizer"), lambda t: t.pos_ or "X", "POS tags"),
             "ents": (("tagger", "parser", "attribute_ruler", "lemmatizer"),
                      lambda t: f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ in ("B", "I") else "O", "spaCy entities")}

    def __init__(self, model: str = "auto", cache: Path | None = None, persist: bool = True):
        """cache: the POS cache file (entity tags go beside it, `<stem>.ents.json`); persist: write newly tagged
        sentences back to the cache files (a server keeps them in memory only: rewriting the file on every request
        would cost more than the prediction)."""
        self.model, self.persist = model, persist
        self.cache_path = cache or (cache_dir() / "pos" / f"{model}.json")
        self.paths = {"pos": self.cache_path, "ents": self.cache_path.with_suffix(".ents.json")}
        self._caches: dict[str, dict[str, list[str]]] = {}

    def _cache(self, kind: str) -> dict[str, list[str]]:
        if kind not in self._caches:
            self._caches[kind] = read_cache(self.paths[kind], _valid)
        return self._caches[kind]

    def _annotate(self, kind: str, sentences: list[list[str]], batch_size: int = 256) -> list[list[str]]:
        cache = self._cache(kind)
        todo = {_key(t): t for t in sentences if len(cache.get(_key(t), ())) != len(t)}  # new or garbled
        # new tags join the cache when it is persisted; a server's (persist=False) stay per call, so its memory
        # does not grow with every post it is sent
        new = cache if self.persist else {}
        if todo:
            from spacy.tokens import Doc

            disable, read, label = self.KINDS[kind]
            nlp = load_spacy(self.model, disable=disable)
            keys = list(todo)
            docs = (Doc(nlp.vocab, words=todo[k]) for k in keys)
            for k, doc in tqdm(zip(keys, nlp.pipe(docs, batch_size=batch_size)), total=len(keys), desc=label,
                               leave=False, disable=len(keys) < 100):
                new[k] = [read(t) for t in doc]
        if todo and self.persist:
            write_json(self.paths[kind], cache)
        return [new.get(k) or cache[k] for k in map(_key, sentences)]

    def tag(self, sentences: list[list[str]]) -> list[list[str]]:
        """Universal POS tags, one per word."""
        return self._annotate("pos", sentences)

    def entities(self, sentences: list[list[str]]) -> list[list[str]]:
        """spaCy's entity guess per word: "O", "B-GPE", "I-GPE", ..."""
        return self._annotate("ents", sentences)

    def ids(self, sentences: list[list[str]]) -> list[list[int]]:
        return [[POS_INDEX.get(p, 0) for p in tags] for tags in self.tag(sentences)]
