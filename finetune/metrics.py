"""Metrics of the published protocol. They take spans and labels, never printed text.

- MNER: seqeval's default (lenient) chunking of word-level tags, micro P/R/F1 over (sentence, type, span), plus
  per-type P/R/F1. Equal to `seqeval.metrics.f1_score(mode=None)` (tested on random tag sequences).
- MRE: micro P/R/F1 over the pairs whose prediction or gold is not `None` (tp = correct non-None predictions).
- MJERE: exact triples (head span, head type, tail span, tail type, relation) and typed entities, micro P/R/F1.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Sequence

from finetune.examples import Span, Triple
from finetune.labels import NONE_RELATION
from finetune.readers import tags_to_spans


def prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "tp": tp, "n_pred": n_pred, "n_gold": n_gold}


def set_scores(gold: Iterable[tuple], pred: Iterable[tuple], type_of=None) -> dict:
    """Micro P/R/F1 of two collections of hashable items; per-type scores when `type_of(item)` is given."""
    gold, pred = set(gold), set(pred)
    out = prf(len(gold & pred), len(pred), len(gold))
    if type_of is not None:
        types = sorted({type_of(x) for x in gold | pred})
        out["per_type"] = {t: prf(len({x for x in gold & pred if type_of(x) == t}),
                                  sum(type_of(x) == t for x in pred), sum(type_of(x) == t for x in gold))
                           for t in types}
    return out


def ner_span_scores(gold: Sequence[Sequence[Span]], pred: Sequence[Sequence[Span]]) -> dict:
    """Typed entity spans per sentence -> micro and per-type P/R/F1."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    g = [(i, s.start, s.end, s.label) for i, spans in enumerate(gold) for s in spans]
    p = [(i, s.start, s.end, s.label) for i, spans in enumerate(pred) for s in spans]
    return set_scores(g, p, type_of=lambda x: x[3])


def ner_scores(gold_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict:
    """Word-level BIO tag sequences -> seqeval-default spans -> scores."""
    for i, (g, p) in enumerate(zip(gold_tags, pred_tags)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
    return ner_span_scores([tags_to_spans(t) for t in gold_tags], [tags_to_spans(t) for t in pred_tags])


def re_scores(gold: Sequence[str], pred: Sequence[str], none: str = NONE_RELATION) -> dict:
    """One relation label per given entity pair -> micro P/R/F1 over non-None, per-relation table, confusion."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predicted")
    tp = sum(g == p and g != none for g, p in zip(gold, pred))
    out = prf(tp, sum(p != none for p in pred), sum(g != none for g in gold))
    out["accuracy"] = sum(g == p for g, p in zip(gold, pred)) / len(gold) if gold else 0.0
    labels = sorted(set(gold) | set(pred) - {none})
    out["per_type"] = {lab: prf(sum(g == p == lab for g, p in zip(gold, pred)), sum(p == lab for p in pred),
                                sum(g == lab for g in gold)) for lab in labels if lab != none}
    confusion: dict[str, Counter] = defaultdict(Counter)
    for g, p in zip(gold, pred):
        confusion[g][p] += 1
    out["confusion"] = {g: dict(c) for g, c in sorted(confusion.items())}
    return out


def _triple_key(i: int, t: Triple) -> tuple:
    return (i, t.head.start, t.head.end, t.head.label, t.tail.start, t.tail.end, t.tail.label, t.label)


def joint_scores(gold: Sequence[Sequence[Triple]], pred: Sequence[Sequence[Triple]],
                 gold_entities: Sequence[Sequence[Span]] | None = None,
                 pred_entities: Sequence[Sequence[Span]] | None = None) -> dict:
    """Exact-match triples and typed entities (by default the heads and tails of the triples)."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    g = [_triple_key(i, t) for i, ts in enumerate(gold) for t in ts if t.label != NONE_RELATION]
    p = [_triple_key(i, t) for i, ts in enumerate(pred) for t in ts if t.label != NONE_RELATION]
    out = set_scores(g, p, type_of=lambda x: x[-1])

    def ents(triples, spans):
        if spans is not None:
            return spans
        return [sorted({s for t in ts if t.label != NONE_RELATION for s in (t.head, t.tail)}) for ts in triples]

    out["entity"] = ner_span_scores(ents(gold, gold_entities), ents(pred, pred_entities))
    out["errors"] = triple_errors(gold, pred, ents(pred, pred_entities))
    return out


def triple_errors(gold: Sequence[Sequence[Triple]], pred: Sequence[Sequence[Triple]],
                  pred_entities: Sequence[Sequence[Span]]) -> dict[str, int]:
    """Where each gold triple went: found; both entities found but the relation missed, mislabelled or reversed;
    one or both entities missed (a wrong span or type counts as missed)."""
    out = Counter({"found": 0, "relation missed": 0, "relation mislabelled": 0, "relation reversed": 0,
                   "one entity missed": 0, "both entities missed": 0})
    for ts, ps, es in zip(gold, pred, pred_entities):
        found, pairs = set(ps), {(p.head, p.tail) for p in ps}
        for t in ts:
            if t.label == NONE_RELATION:
                continue
            n_found = (t.head in es) + (t.tail in es)
            if t in found:
                out["found"] += 1
            elif n_found == 2:
                out["relation mislabelled" if (t.head, t.tail) in pairs else
                    "relation reversed" if (t.tail, t.head) in pairs else "relation missed"] += 1
            else:
                out["one entity missed" if n_found == 1 else "both entities missed"] += 1
    return dict(out)
