"""Context from the training set itself (issue 15; MoRe-Text's idea with an in-domain store): each post's k most
similar training posts, by sentence embedding, appended to its context segment, so the encoder reads how the same
names were written elsewhere.

    data.retrieve: K          0 (off) or the number of training posts retrieved for each post
    data.retrieve_as          text: their words (MoRe-Text) | labelled: their words with the gold entity types
                              written in ("Kevin Durant (person) scores ...") | entities: only their gold entities
                              with types ("Kevin Durant (person) ; Warriors (organization)"); on Twitter-2015
                              three posts as entities add 30 sub-tokens to a post on average, two labelled 89

The store is the training split: its posts' words, joined by spaces, embedded once with the zoo's MiniLM-L6
sentence model (all-MiniLM-L6-v2: mean-pooled, L2-normalised; frozen, never the fine-tuned encoder) and cached
under $MMIE_CACHE/retrieval/ by content. A query is ranked by cosine similarity against the store. Never retrieved:
the post itself, nor any training post with exactly the same words (a repost; under MRE, the same sentence with
another entity pair) — for training, dev and test queries alike, so training sees what evaluation sees. Only
training gold is ever written into a context. The store (texts and embeddings) is saved with the model
(model/retrieval/), so a served model retrieves from the data it was trained on.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from common.errors import MmieError
from common.offline import cache_dir, cached_tensor
from finetune.examples import Example

EMBEDDER = "minilm-l6"
SEPARATOR = "|"  # between the retrieved posts in a context
TYPE_WORDS = {"PER": "person", "LOC": "location", "ORG": "organization", "MISC": "misc"}  # others: lower-cased


FORMS = ("text", "labelled", "entities")  # data.retrieve_as
BLOCK = 1024  # queries ranked at a time: a (BLOCK, store size) similarity matrix, not (queries, store size)


def query_text(ex: Example) -> str:
    """What is embedded, and what counts as "the same words": the post's words joined by spaces."""
    return " ".join(ex.tokens)


def _type_word(span) -> str:
    return f"({TYPE_WORDS.get(span.label, span.label.lower())})"


def render(ex: Example, form: str) -> str:
    """A training post as context, in one of FORMS (data.retrieve_as); "entities" of a post without typed gold
    entities is ""."""
    typed = sorted(s for s in set(ex.entities) if s.label)
    if form == "entities":
        return " ; ".join(f"{' '.join(ex.tokens[s.start:s.end])} {_type_word(s)}" for s in typed)
    if form == "text" or not typed:
        return query_text(ex)
    after: dict[int, list[str]] = {}
    for span in typed:
        after.setdefault(span.end, []).append(_type_word(span))
    words = []
    for i, w in enumerate(ex.tokens, 1):
        words.append(w)
        words.extend(after.get(i, []))
    return " ".join(words)


def embed(texts: list[str], persist: bool = True, encoder=None) -> torch.Tensor:
    """(N, D) normalised sentence embeddings, cached on disk by the texts' content (float32 safetensors)."""
    def compute():
        from common.zoo import TextEncoder

        return (encoder or TextEncoder(EMBEDDER)).embed(texts, batch_size=64, max_length=128).float()

    key = hashlib.sha256(("\n".join([EMBEDDER, *texts])).encode("utf-8")).hexdigest()[:24]
    return cached_tensor(cache_dir() / "retrieval" / f"{key}.safetensors", len(texts), compute, persist)


class Retriever:
    """The k nearest training posts of each query post, as context text."""

    def __init__(self, keys: list[str], texts: list[str], vectors: torch.Tensor, k: int):
        if not (len(keys) == len(texts) == vectors.shape[0]):
            raise MmieError(f"retrieval store: {len(keys)} keys, {len(texts)} texts, {vectors.shape[0]} vectors")
        self.keys, self.texts, self.vectors, self.k = keys, texts, vectors, k
        self._encoder = None  # a server's embedder (persist=False): loaded once, kept
        self._rows: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            self._rows.setdefault(key, []).append(i)

    @classmethod
    def build(cls, train: list[Example], k: int, form: str = "text", persist: bool = True) -> "Retriever":
        if form not in FORMS:
            raise MmieError(f"data.retrieve_as: {form!r} is not one of {', '.join(FORMS)}")
        keys = [query_text(ex) for ex in train]
        return cls(keys, [render(ex, form) for ex in train], embed(keys, persist), k)

    def neighbours(self, examples: list[Example], persist: bool = True) -> list[list[int]]:
        """Per query, the store rows of its k nearest training posts, most similar first."""
        if not examples:
            return []
        queries = [query_text(ex) for ex in examples]
        if self._encoder is None and not persist:  # a server: keep one embedder instead of reloading per call
            from common.zoo import TextEncoder

            self._encoder = TextEncoder(EMBEDDER)
        # the training split queries itself: its vectors are the store's, not embedded again
        vectors = self.vectors if queries == self.keys else embed(queries, persist, self._encoder)
        k = min(self.k, self.vectors.shape[0])
        out = []
        for b in range(0, len(queries), BLOCK):
            sims = vectors[b:b + BLOCK] @ self.vectors.T  # (block, N) cosine
            for q, key in enumerate(queries[b:b + BLOCK]):
                sims[q, self._rows.get(key, [])] = float("-inf")  # never the post itself or a copy of it
            top = sims.topk(k, dim=1)
            out += [[i for i, s in zip(rows, scores) if s != float("-inf")]
                    for rows, scores in zip(top.indices.tolist(), top.values.tolist())]
        return out

    def contexts(self, examples: list[Example], base: list[str], persist: bool = True) -> list[str]:
        """Each post's context (`base`: its picture's description, may be "") with its neighbours appended."""
        out = []
        for ctx, rows in zip(base, self.neighbours(examples, persist)):
            parts = [t for t in [ctx, *(self.texts[i] for i in rows)] if t]
            out.append(f" {SEPARATOR} ".join(parts))
        return out

    def save(self, out: Path) -> None:
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": self.vectors.contiguous()}, str(out / "embeddings.safetensors"))
        (out / "store.json").write_text(json.dumps({"embedder": EMBEDDER, "k": self.k, "keys": self.keys,
                                                    "texts": self.texts}) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Retriever":
        from safetensors.torch import load_file

        try:
            store = json.loads((path / "store.json").read_text())
            vectors = load_file(str(path / "embeddings.safetensors"))["embeddings"]
        except Exception as e:  # missing, truncated or garbled: name the directory
            raise MmieError(f"{path}: the model's retrieval store is unreadable ({str(e)[:120]})") from None
        return cls(store["keys"], store["texts"], vectors, int(store["k"]))
