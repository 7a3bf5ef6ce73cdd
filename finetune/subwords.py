"""Word -> sub-word alignment. Labels sit on each word's first sub-token; words cut off by `max_length` are
reported (with the gold entities that fell off) instead of vanishing silently."""
from __future__ import annotations

from dataclasses import dataclass

from finetune.examples import Example


@dataclass
class Encoded:
    input_ids: list[int]
    word_start: list[int]  # per word: position of its first sub-token, -1 when truncation removed it
    n_text: int  # sub-tokens of [CLS] + text + [SEP]; the context (if any) follows


def clean_words(sentences: list[list[str]], tokenizer) -> list[list[str]]:
    """Words the tokenizer maps to nothing (empty, zero-width or control characters) become its unknown token,
    so every word keeps a first sub-token. Each distinct word is checked once."""
    vocab = {w for words in sentences for w in words}
    empty = {w for w in vocab if not w.strip() or not tokenizer.tokenize(w)}
    if not empty:
        return sentences
    return [[tokenizer.unk_token if w in empty else w for w in words] for words in sentences]


def encode_batch(tokenizer, sentences: list[list[str]], max_length: int = 128,
                 contexts: list[str] | None = None) -> list[Encoded]:
    """Tokenise pre-split words, with an optional context string as the second segment."""
    sentences = clean_words(sentences, tokenizer)
    if contexts is not None:  # the longer segment is cut first; lost text words show up in word_start
        ctx_words = [c.split() if c else [] for c in contexts]
        enc = tokenizer(sentences, ctx_words, truncation="longest_first", max_length=max_length,
                        is_split_into_words=True)
    else:
        enc = tokenizer(sentences, truncation=True, max_length=max_length, is_split_into_words=True)
    out = []
    for i, words in enumerate(sentences):
        word_ids = enc.word_ids(i)
        seq_ids = enc.sequence_ids(i)
        starts = [-1] * len(words)
        for pos, (w, s) in enumerate(zip(word_ids, seq_ids)):
            if w is not None and s == 0 and starts[w] == -1:
                starts[w] = pos
        n_text = 1 + max((p for p, s in enumerate(seq_ids) if s == 0), default=0) + 1
        out.append(Encoded(enc["input_ids"][i], starts, n_text))
    return out


def truncation_report(examples: list[Example], encoded: list[Encoded]) -> dict[str, int]:
    """How many sentences lost words to truncation, and how many gold entities lost any of their words."""
    sentences = words = entities = 0
    for ex, enc in zip(examples, encoded):
        lost = {w for w, s in enumerate(enc.word_start) if s == -1}
        if lost:
            sentences += 1
            words += len(lost)
            entities += sum(any(w in lost for w in range(e.start, e.end)) for e in ex.entities)
    return {"sentences_truncated": sentences, "words_truncated": words, "entities_truncated": entities}
