"""Word shapes: the casing and form of each word, which an uncased sub-word encoder (MiniLM-L6 lower-cases its
input) cannot see, yet which carry much of the signal for entities in tweets ("Tower Bridge", "NASA", "#NWM7").
One id per word; the heads embed it next to the part-of-speech tag."""
from __future__ import annotations

import re

from finetune.examples import MARKERS

SHAPES = ("pad", "lower", "title", "upper", "upper1", "mixed", "digits", "alnum", "mention", "hashtag", "url",
          "punct", "marker", "other")
SHAPE_INDEX = {s: i for i, s in enumerate(SHAPES)}
_URL = re.compile(r"^(https?://|www\.)", re.I)


def word_shape(word: str) -> str:
    if word in MARKERS:
        return "marker"
    if _URL.match(word):
        return "url"
    if len(word) > 1 and word[0] == "@":
        return "mention"
    if len(word) > 1 and word[0] == "#":
        return "hashtag"
    letters = [c for c in word if c.isalpha()]
    if not letters:
        if any(c.isdigit() for c in word):
            return "digits"
        return "punct" if word and all(not c.isalnum() for c in word) else "other"
    if any(c.isdigit() for c in word):
        return "alnum"
    if all(c.isupper() for c in letters):
        return "upper1" if len(letters) == 1 else "upper"
    if all(c.islower() for c in letters):
        return "lower"
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return "title"
    return "mixed"


def shape_ids(words: list[str]) -> list[int]:
    return [SHAPE_INDEX[word_shape(w)] for w in words]


CHAR_VOCAB = 1024  # character ids: 0 padding, 1 any character past U+03FD, else the code point + 2
MAX_CHARS = 20  # characters read per word (head.char_dim): a longer word keeps its first 20


def char_ids(words: list[str], max_chars: int = MAX_CHARS) -> list[list[int]]:
    """Each word's characters as ids for the character CNN (the model's head.char_dim), at most max_chars, cased."""
    return [[ord(c) + 2 if ord(c) + 2 < CHAR_VOCAB else 1 for c in w[:max_chars]] or [1] for w in words]
