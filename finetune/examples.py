"""Typed examples shared by the readers, the models and the metrics."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

MARKERS = ("<h>", "</h>", "<t>", "</t>")  # entity markers inserted around an MNRE pair


@dataclass(frozen=True, order=True)
class Span:
    start: int  # first token
    end: int  # one past the last token
    label: str = ""  # entity type; "" where the dataset gives none (MNRE heads and tails)


@dataclass(frozen=True, order=True)
class Triple:
    head: Span
    tail: Span
    label: str  # relation name; NONE_RELATION for "no relation" (MNRE only)


@dataclass
class Example:
    uid: str  # "<file>:<line>", where the example starts
    tokens: list[str]
    image: str  # image file name, relative to the image root
    tags: list[str] | None = None  # MNER: word-level BIO tags exactly as given (OTHER mapped to MISC)
    entities: list[Span] = field(default_factory=list)
    triples: list[Triple] = field(default_factory=list)


@dataclass
class Split:
    name: str
    path: Path
    examples: list[Example]
    skipped: Counter = field(default_factory=Counter)  # reason -> count of input items skipped

    def __len__(self) -> int:
        return len(self.examples)
