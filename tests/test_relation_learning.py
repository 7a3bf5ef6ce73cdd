"""Relation learning works: on a small dataset whose relations the text tells (helpers/relation_text.py), a few
epochs of MRE and of MJERE take dev F1 far above what the majority class scores. A change that stops relation
learning (markers the tokenizer splits, a head that never leaves `None`, a decoder that drops triples) fails here."""
from collections import Counter
import json

import pytest
import torch

from finetune.checkpoint import load_trained
from finetune.labels import NER_TAGS
from finetune.metrics import re_scores
from finetune.mjere import build_from_mnre
from finetune.readers import read_task
from finetune.run import main as finetune_main
from finetune.wordpair import relation_types
from helpers.relation_text import write_relation_text


@pytest.fixture(scope="module")
def relation_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("relation_text")
    mnre = write_relation_text(root / "mnre")
    build_from_mnre(mnre, root / "mjere")
    return root


def run(task, data, out, *extra):
    args = ["--task", task, "--data", str(data), "--init", "none", "--run-dir", str(out), "--tracking-uri",
            str(out.parent / "mlruns"), "data.image=none", "model.image_size=64", "train.batch_size=8",
            "train.patience=10", *extra]
    assert finetune_main(args) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("head", [["head.relation=wordpair"], ["head.relation=markers"],
                                  ["head.relation=markers", "head.marker_form=true", "head.spacy_entities=true"]],
                         ids=["wordpair", "markers", "markers+form"])
def test_mre_learns_far_above_the_majority_class(relation_data, tmp_path, head):
    m = run("mre", relation_data / "mnre", tmp_path / "run", "train.epochs=4", *head)
    gold = [ex.triples[0].label for ex in read_task("mre", relation_data / "mnre")["dev"].examples]
    majority = Counter(gold).most_common(1)[0][0]
    floor = re_scores(gold, [majority] * len(gold))["f1"]  # `None` here: 0 over the non-None labels
    curve = [h["dev/f1"] for h in m["history"]]
    assert max(curve) >= floor + 0.6, curve
    assert m["test"]["f1"] >= 0.6 and m["test"]["recall"] >= 0.5, m["test"]
    assert m["none_margin"]["f1"] >= m["none_margin"]["f1_at_zero"]  # the dev-chosen margin never hurts dev
    assert m["dev"]["f1"] == pytest.approx(m["none_margin"]["f1"])  # dev is reported as decoded with it
    assert m["dev_at_selection"]["f1"] == pytest.approx(max(curve))


@pytest.mark.parametrize("tagger", [[], ["head.entity_tagger=1"]], ids=["grid", "grid+entity-tagger"])
def test_mjere_learns_triples(relation_data, tmp_path, tagger):
    m = run("mjere", relation_data / "mjere", tmp_path / "run", "train.epochs=6", *tagger)
    curve = [h["dev/f1"] for h in m["history"]]
    assert max(curve) >= 0.5, curve  # predicting nothing (the majority cell everywhere) scores 0
    assert m["dev"]["f1"] == pytest.approx(m["none_margin"]["f1"]) and m["none_margin"]["f1"] >= max(curve)
    assert m["test"]["entity"]["f1"] >= 0.6 and m["test"]["f1"] >= 0.4, (m["test"]["f1"], m["test"]["entity"])
    # the relations' type signatures in training are saved with the model, for head.typed_decode
    model, _ = load_trained(tmp_path / "run")
    train = read_task("mjere", relation_data / "mjere")["train"].examples
    expected = relation_types(model.classes, [t for ex in train for t in ex.triples])
    assert torch.equal(model.relation_types, expected) and 0 < int(expected.sum()) < expected.numel()
    if tagger:  # the auxiliary tagger is saved beside the grid head (a trained run loads back whole)
        assert hasattr(model, "crf") and hasattr(model, "pair") and model.emit[-1].out_features == len(NER_TAGS)
