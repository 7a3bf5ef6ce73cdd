import random

import pytest
from seqeval.metrics import f1_score, precision_score, recall_score

from finetune.examples import Span, Triple
from finetune.metrics import joint_scores, ner_scores, re_scores
from finetune.report import write_report


def test_ner_known_answer_with_lenient_i_start():
    gold = [["B-PER", "I-PER", "O", "I-LOC"],  # the I-LOC starts an entity under seqeval's default mode
            ["B-ORG", "O", "B-MISC"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC"],  # PER right; LOC right (same span and type)
            ["B-ORG", "I-ORG", "B-PER"]]  # ORG span wrong, MISC missed, PER spurious
    s = ner_scores(gold, pred)
    assert (s["tp"], s["n_pred"], s["n_gold"]) == (2, 4, 4)
    assert s["f1"] == pytest.approx(0.5)
    assert s["per_type"]["LOC"]["f1"] == 1.0 and s["per_type"]["MISC"]["recall"] == 0.0
    assert s["per_type"]["PER"]["precision"] == 0.5


def test_ner_equals_seqeval_on_random_sequences():
    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
    for trial in range(30):
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 25))] for _ in range(40)]
        pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in g] for g in gold]
        s = ner_scores(gold, pred)
        assert s["f1"] == pytest.approx(f1_score(gold, pred), abs=1e-12)
        assert s["precision"] == pytest.approx(precision_score(gold, pred), abs=1e-12)
        assert s["recall"] == pytest.approx(recall_score(gold, pred), abs=1e-12)


def test_re_known_answer_excludes_none():
    gold = ["/per/per/peer", "None", "/per/org/member_of", "/per/per/peer", "None"]
    pred = ["/per/per/peer", "/per/per/peer", "None", "/per/org/member_of", "None"]
    s = re_scores(gold, pred)
    # tp 1 (first); predicted non-None 3; gold non-None 3
    assert (s["tp"], s["n_pred"], s["n_gold"]) == (1, 3, 3) and s["f1"] == pytest.approx(1 / 3)
    assert s["accuracy"] == pytest.approx(2 / 5)
    assert s["confusion"]["None"] == {"/per/per/peer": 1, "None": 1}
    assert "None" not in s["per_type"] and s["per_type"]["/per/per/peer"]["recall"] == 0.5


def test_joint_known_answer_exact_triples_and_entities():
    A, B, C = Span(0, 1, "PER"), Span(2, 4, "ORG"), Span(5, 6, "LOC")
    gold = [[Triple(A, B, "member_of"), Triple(A, C, "place_of_residence")]]
    pred = [[Triple(A, B, "member_of"),  # exact
             Triple(A, Span(5, 6, "ORG"), "place_of_residence")]]  # tail type wrong -> triple wrong
    s = joint_scores(gold, pred)
    assert (s["tp"], s["n_pred"], s["n_gold"]) == (1, 2, 2) and s["f1"] == pytest.approx(0.5)
    e = s["entity"]  # gold {A, B, C}, pred {A, B, C-as-ORG}
    assert (e["tp"], e["n_pred"], e["n_gold"]) == (2, 3, 3)
    assert s["errors"]["found"] == 1 and s["errors"]["one entity missed"] == 1


def test_triple_errors_say_where_each_gold_triple_went():
    A, B, C, D = Span(0, 1, "PER"), Span(2, 3, "ORG"), Span(4, 5, "LOC"), Span(6, 7, "PER")
    gold = [[Triple(A, B, "member_of"), Triple(A, C, "lives_in"), Triple(D, B, "member_of"), Triple(C, B, "x"),
             Triple(B, D, "y"), Triple(Span(8, 9, "PER"), Span(9, 10, "PER"), "peer")]]
    pred = [[Triple(A, B, "member_of"), Triple(A, C, "born_in"), Triple(B, D, "member_of")]]
    errors = joint_scores(gold, pred, pred_entities=[[A, B, C, D]])["errors"]
    assert errors == {"found": 1, "relation mislabelled": 2, "relation reversed": 1, "relation missed": 1,
                      "one entity missed": 0, "both entities missed": 1}


def test_empty_predictions_give_zero_not_nan():
    assert ner_scores([["B-PER"]], [["O"]])["f1"] == 0.0
    assert re_scores(["None"], ["None"])["f1"] == 0.0


def test_report_writes_json_and_plots(tmp_path):
    s = re_scores(["/per/per/peer", "None"], ["/per/per/peer", "/per/per/peer"])
    paths = write_report(s, tmp_path, "test_mre", "MRE test")
    assert paths["json"].is_file() and paths["f1"].stat().st_size > 1000 and paths["confusion"].is_file()
