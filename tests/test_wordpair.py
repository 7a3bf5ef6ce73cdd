import pytest
import torch

from finetune.batches import bio_tags, mark_pair
from finetune.examples import Example, Span, Triple
from finetune.mjere import build_from_mnre
from finetune.readers import read_task
from finetune.labels import NER_TAGS, joint_classes
from finetune.wordpair import decode_joint, encode_joint


def round_trip(ex, classes):
    grid = encode_joint(ex, classes)
    return decode_joint(grid, torch.ones_like(grid, dtype=torch.float), len(ex.tokens), classes)


def test_encode_decode_round_trips_gold_triples():
    A, B, C = Span(0, 2, "PER"), Span(3, 4, "ORG"), Span(5, 6, "LOC")
    ex = Example("x:1", "Ann Lee of Acme in Paris now".split(), "x.jpg", entities=[A, B, C],
                 triples=[Triple(A, B, "member_of"), Triple(A, C, "place_of_residence"), Triple(C, A, "contain")])
    classes = joint_classes(["member_of", "place_of_residence", "contain"])
    ents, triples = round_trip(ex, classes)
    assert ents == [A, B, C] and triples == sorted(ex.triples)


def test_round_trip_on_derived_mjere(real_data, tmp_path):
    build_from_mnre(real_data / "mnre", tmp_path)
    splits = read_task("mjere", tmp_path)
    classes = joint_classes(sorted({t.label for ex in splits["train"].examples for t in ex.triples}))
    kept = 0
    for ex in splits["test"].examples:
        ents, triples = round_trip(ex, classes)
        spans = sorted(set(ex.entities))
        if all(a.end <= b.start for a, b in zip(spans, spans[1:])):  # no overlapping entities: exact
            assert triples == sorted(set(ex.triples)) and ents == spans
        kept += len(set(triples) & set(ex.triples))
    assert kept == 637  # of 640: the grid cannot hold the triples of the 2 sentences with nested entities
    dev = splits["dev"].examples
    assert sum(len(set(round_trip(ex, classes)[1]) & set(ex.triples)) for ex in dev) == 622  # of 624 on dev


def test_mark_pair_inserts_markers_around_head_and_tail():
    h, t = Span(0, 1), Span(2, 4)
    ex = Example("m:1", ["Ann", "met", "Bob", "Ray", "today"], "x.jpg", entities=[h, t], triples=[Triple(h, t, "x")])
    words, hi, ti = mark_pair(ex)
    assert words == ["<h>", "Ann", "</h>", "met", "<t>", "Bob", "Ray", "</t>", "today"]
    assert (hi, ti) == (0, 4)
    adjacent = Example("m:2", ["A", "B"], "x", triples=[Triple(Span(1, 2), Span(0, 1), "x")])
    assert mark_pair(adjacent)[0] == ["<t>", "A", "</t>", "<h>", "B", "</h>"]


def test_factorised_pair_mlp_equals_the_materialised_pairs():
    from finetune.wordpair import PairMLP, pair_features

    torch.manual_seed(0)
    mlp = PairMLP(8, 16, dropout=0.0)
    x = torch.randn(3, 5, 8)
    reference = mlp.act(mlp.linear(pair_features(x)))  # (3, 5, 5, 16): Linear on [x_i; x_j; x_i - x_j]
    assert torch.allclose(mlp(x), reference, atol=1e-5)
    cells = torch.tensor([[0, 4], [2, 2], [4, 1]])
    assert torch.allclose(mlp(x, cells), reference[torch.arange(3), cells[:, 0], cells[:, 1]], atol=1e-5)


@pytest.mark.parametrize("style", ["tokens", "punct"])
def test_each_marker_is_one_sub_token_of_its_own(style, tmp_path):
    from common.zoo import TextEncoder
    from finetune.batches import build_features
    from transformers import AutoTokenizer

    tok = TextEncoder("minilm-l6").tokenizer
    h, t = Span(0, 2), Span(3, 4)
    ex = Example("m:1", ["Ann", "Lee", "met", "Bob", "today"], "x.jpg", entities=[h, t], triples=[Triple(h, t, "x")])
    (f,), _ = build_features("mre", [ex], tok, [["PROPN"] * 5], [""], 64, ["None", "x"], style)
    pieces = tok.convert_ids_to_tokens(f.input_ids)
    marks = [pieces[f.word_start[i]] for i in (0, 3, 5, 7)]  # <h> </h> <t> </t> in the marked words
    assert len(set(marks)) == 4 and pieces.count(marks[0]) == 1
    assert f.pair == (0, 5) and pieces[f.word_start[f.pair[0]] + 1] == "ann"
    if style == "tokens":  # the exported tokenizer keeps them whole
        tok.save_pretrained(tmp_path)
        assert AutoTokenizer.from_pretrained(tmp_path).tokenize("[unused2] Bob [unused3]") == [
            "[unused2]", "bob", "[unused3]"]


def test_word_pair_head_cells_equal_the_grid_and_final_is_its_formula():
    from finetune.wordpair import WordPairHead

    torch.manual_seed(0)
    head = WordPairHead(16, 5, form_dim=8, position_dim=8, max_words=6, hidden=32, lam=0.7, dropout=0.0).eval()
    words, form = torch.randn(3, 7, 16), torch.randn(3, 7, 8)  # 7 words > max_words: the last ones share a position
    grid = head(words, form)
    assert grid["final"].shape == (3, 7, 7, 5) and torch.allclose(grid["final"].exp().sum(-1), torch.ones(3, 7, 7))
    cells = torch.tensor([[0, 1], [6, 2], [3, 3]])
    one = head(words, form, cells)
    rows = torch.arange(3)
    for k in ("final", "text"):  # the factorised per-cell path reads what the full grid has at those cells
        assert torch.allclose(one[k], grid[k][rows, cells[:, 0], cells[:, 1]], atol=1e-5)
    # the pair MLP is Linear([x_i; x_j; x_i - x_j]) without building the pair tensor
    x_i, x_j = words[:, :, None].expand(-1, -1, 7, -1), words[:, None].expand(-1, 7, -1, -1)
    pairs = head.text.act(head.text.linear(torch.cat([x_i, x_j, x_i - x_j], -1)))
    assert torch.allclose(head.text(words), pairs, atol=1e-5)
    # P_final = softmax(P_all + lam * log(P_all / P_text)), P_all from the concatenated channels (Shap-CA Eq. 16-17)
    positions = torch.arange(7).clamp(max=5)
    x = [head.text(words), head.form(form), head.position(head.position_emb(positions)[None].expand(3, -1, -1))]
    log_all = torch.log_softmax(head.out_all(torch.cat(x, -1)), -1)
    log_text = torch.log_softmax(head.out_text(x[0]), -1)
    expect = torch.log_softmax(log_all.exp() + 0.7 * (log_all - log_text), -1)
    assert torch.allclose(grid["final"], expect, atol=1e-5) and torch.allclose(grid["text"], log_text, atol=1e-5)


def test_grid_loss_skips_ignored_cells_and_weighs_classes():
    from common.labels import IGNORE
    from finetune.wordpair import grid_loss

    torch.manual_seed(0)
    out = {k: torch.log_softmax(torch.randn(2, 3, 3, 4), -1) for k in ("final", "text")}
    labels = torch.randint(0, 4, (2, 3, 3))
    labels[0, 2, :] = IGNORE
    keep = labels != IGNORE
    nll = lambda lp, w=None: torch.nn.functional.nll_loss(lp[keep], labels[keep], weight=w)  # noqa: E731
    assert torch.allclose(grid_loss(out, labels), nll(out["final"]) + nll(out["text"]))
    assert torch.allclose(grid_loss(out, labels, text_channel=False), nll(out["final"]))  # Shap-CA's Eq. 18 alone
    w = torch.tensor([0.1, 1.0, 2.0, 1.0])
    manual = -(w[labels[keep]] * out["final"][keep].gather(1, labels[keep][:, None]).squeeze(1)).sum() / w[
        labels[keep]].sum()
    assert torch.allclose(grid_loss({"final": out["final"]}, labels, w), manual)  # a weighted mean
    assert grid_loss(out, torch.full_like(labels, IGNORE)) == 0  # nothing to learn from: 0, not nan


def test_typed_decoding_with_every_signature_allowed_is_the_cellwise_decoding():
    from finetune.calibration import decode
    from finetune.wordpair import decode_joint_typed

    classes = joint_classes(["contain", "member_of", "peer"])
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        logits = torch.randn(7, 7, len(classes), generator=g) * 3
        logp = torch.log_softmax(logits, -1)
        for margin in (-1.0, 0.0, 1.0):
            pred = decode(logp, margin)
            cellwise = decode_joint(pred, logp.gather(-1, pred[..., None]).squeeze(-1).exp(), 7, classes)
            assert decode_joint_typed(logp, margin, 7, classes, torch.ones(len(classes), 4, 4)) == cellwise


def test_typed_decoding_keeps_relations_to_their_training_types():
    from finetune.wordpair import decode_joint_typed, relation_types

    classes = joint_classes(["member_of", "peer"])
    A, B = Span(0, 1, "PER"), Span(2, 3, "ORG")
    allowed = relation_types(classes, [Triple(A, B, "member_of"), Triple(A, Span(2, 3, "PER"), "peer")])
    c = {name: i for i, name in enumerate(classes)}
    assert allowed[c["member_of"]].sum() == 1 and allowed[c["member_of"], 0, 2] == 1  # PER -> ORG only

    def grid(b_types: dict, relation: dict) -> torch.Tensor:
        logits = torch.full((3, 3, len(classes)), -9.0)
        logits[..., 0] = 0.0  # None everywhere else
        logits[0, 0, c["PER"]] = 5.0
        for name, v in b_types.items():
            logits[2, 2, c[name]] = v
        for name, v in relation.items():
            logits[0, 2, c[name]] = v
        return torch.log_softmax(logits, -1)

    # a doubtful LOC tail under a confident member_of is re-typed ORG: the triple survives, typed as in training
    ents, triples = decode_joint_typed(grid({"LOC": 3.0, "ORG": 2.6}, {"member_of": 6.0}), 0.0, 3, classes, allowed)
    assert ents == [A, B] and triples == [Triple(A, B, "member_of")]
    # a confident LOC tail under a doubtful member_of keeps its type, and the relation, never seen PER -> LOC, goes
    ents, triples = decode_joint_typed(grid({"LOC": 9.0, "ORG": 1.0}, {"member_of": 0.5}), 0.0, 3, classes, allowed)
    assert ents == [A, Span(2, 3, "LOC")] and triples == []
    # a PER tail: the best relation its types allow (peer) instead of member_of, which PER -> PER never takes
    ents, triples = decode_joint_typed(grid({"PER": 9.0}, {"member_of": 4.0, "peer": 3.0}), 0.0, 3, classes, allowed)
    assert triples == [Triple(A, Span(2, 3, "PER"), "peer")]


def test_bio_tags_of_joint_entities_keep_the_longer_of_nested_spans():
    # "New York City mayor Adams": LOC "New York City" nests LOC "New York"; PER "Adams"
    ents = [Span(0, 2, "LOC"), Span(0, 3, "LOC"), Span(4, 5, "PER")]
    assert bio_tags(ents, 5) == [NER_TAGS.index(t) for t in ("B-LOC", "I-LOC", "I-LOC", "O", "B-PER")]
    assert bio_tags([Span(3, 6, "ORG")], 4) == [0, 0, 0, 0]  # past n_words: untagged, not half-tagged
