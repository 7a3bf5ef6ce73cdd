"""Part-of-speech tags from spaCy, aligned to the dataset's own tokens (spaCy never re-tokenises them), cached on
disk by the sentence's tokens so each sentence is tagged once."""
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


def _key(tokens: list[str]) -> str:
    return hashlib.sha1("\x1f".join(tokens).encode()).hexdigest()


class PosTagger:
    def __init__(self, model: str = "auto", cache: Path | None = None, persist: bool = True):
        """persist: write newly tagged sentences back to the cache file (a server keeps them in memory only:
        rewriting the file on every request would cost more than the prediction)."""
        self.model, self.persist = model, persist
        self.cache_path = cache or (cache_dir() / "pos" / f"{model}.json")
        self._cache: dict[str, list[str]] = read_cache(
            self.cache_path, lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v))

    def tag(self, sentences: list[list[str]], batch_size: int = 256) -> list[list[str]]:
        todo = {_key(t): t for t in sentences if len(self._cache.get(_key(t), ())) != len(t)}  # new or garbled
        # new tags join the cache when it is persisted; a server's (persist=False) stay per call, so its memory
        # does not grow with every post it is sent
        new = self._cache if self.persist else {}
        if todo:
            from spacy.tokens import Doc

            nlp = load_spacy(self.model, disable=("parser", "ner", "lemmatizer"))
            keys = list(todo)
            docs = (Doc(nlp.vocab, words=todo[k]) for k in keys)
            for k, doc in tqdm(zip(keys, nlp.pipe(docs, batch_size=batch_size)), total=len(keys), desc="POS tags",
                               leave=False, disable=len(keys) < 100):
                new[k] = [t.pos_ or "X" for t in doc]
        if todo and self.persist:
            write_json(self.cache_path, self._cache)
        return [new.get(k) or self._cache[k] for k in map(_key, sentences)]

    def ids(self, sentences: list[list[str]]) -> list[list[int]]:
        return [[POS_INDEX.get(p, 0) for p in tags] for tags in self.tag(sentences)]
