"""Word -> sub-word alignment. Labels sit on each word's first sub-token; words cut off by `max_length` are
reported (with the gold entities that fell off) instead of vanishing silently; so are contexts cut at their own
budget (`data.max_context_length`)."""
from __future__ import annotations

from dataclasses import dataclass

from finetune.examples import Example


@dataclass
class Encoded:
    input_ids: list[int]
    word_start: list[int]  # per word: position of its first sub-token, -1 when truncation removed it
    n_text: int  # sub-tokens of [CLS] + text + [SEP]; the context (if any) follows
    context_cut: int = 0  # sub-tokens of the context that its budget cut off


def clean_words(sentences: list[list[str]], tokenizer) -> list[list[str]]:
    """Words the tokenizer maps to nothing (empty, zero-width or control characters) become its unknown token,
    so every word keeps a first sub-token. Each distinct word is checked once."""
    vocab = {w for words in sentences for w in words}
    empty = {w for w in vocab if not w.strip() or not tokenizer.tokenize(w)}
    if not empty:
        return sentences
    return [[tokenizer.unk_token if w in empty else w for w in words] for words in sentences]


def encode_batch(tokenizer, sentences: list[list[str]], max_length: int = 128,
                 contexts: list[str] | None = None, max_context_length: int = 128) -> list[Encoded]:
    """Tokenise pre-split words as [CLS] text [SEP], then an optional context string as a second segment
    (context [SEP]). Each segment has its own budget, counted with its special tokens: the text `max_length`,
    the context `max_context_length` (0: no context segment) — a long generated description is cut at its own
    budget and never pushes tweet words out; how much was cut is in `context_cut`."""
    sentences = clean_words(sentences, tokenizer)
    enc = tokenizer(sentences, truncation=True, max_length=max_length, is_split_into_words=True)
    ctx_ids: list[list[int]] = [[] for _ in sentences]
    if contexts is not None and max_context_length > 1:
        ctx_words = [c.split() if c else [] for c in contexts]
        ctx_ids = tokenizer(ctx_words, add_special_tokens=False, is_split_into_words=True)["input_ids"]
    out = []
    for i, words in enumerate(sentences):
        starts = [-1] * len(words)
        for pos, w in enumerate(enc.word_ids(i)):
            if w is not None and starts[w] == -1:
                starts[w] = pos
        ids = list(enc["input_ids"][i])
        n_text, ctx = len(ids), ctx_ids[i]
        kept = ctx[:max_context_length - 1]
        if kept:
            ids += kept + [tokenizer.sep_token_id]
        out.append(Encoded(ids, starts, n_text, len(ctx) - len(kept)))
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
