"""The `None` margin chosen on dev (finetune/calibration.py)."""
import torch

from finetune.calibration import best_joint_margin, best_none_margin, decode
from finetune.examples import Span, Triple
from finetune.metrics import re_scores
from finetune.labels import joint_classes
from finetune.wordpair import encode_joint
from finetune.examples import Example


def test_margin_zero_is_the_argmax_and_a_margin_shifts_only_none():
    logp = torch.log_softmax(torch.randn(200, 6), -1)
    assert torch.equal(decode(logp, 0.0), logp.argmax(-1))
    low, high = decode(logp, -10.0), decode(logp, 10.0)
    assert bool((low == 0).all()) and bool((high != 0).all())  # -10: None always wins; +10: never
    assert torch.equal(high, logp[:, 1:].argmax(-1) + 1)


def test_best_margin_is_the_exhaustive_best_on_the_given_examples():
    g = torch.Generator().manual_seed(0)
    gold = torch.randint(0, 4, (300,), generator=g)
    logits = torch.randn(300, 4, generator=g)
    logits[torch.arange(300), gold] += 0.8
    logits[:, 0] += 1.0  # a classifier that says None too often
    logp = torch.log_softmax(logits, -1)
    found = best_none_margin(gold, logp)
    names = ["None", "a", "b", "c"]

    def f1(m):
        return re_scores([names[i] for i in gold], [names[i] for i in decode(logp, m)])["f1"]

    assert abs(found["f1"] - f1(found["margin"])) < 1e-6 and abs(found["f1_at_zero"] - f1(0.0)) < 1e-6
    assert found["margin"] > 0 and found["f1"] > found["f1_at_zero"]  # None must win by more: recall comes back
    assert all(f1(m) <= found["f1"] + 1e-9 for m in torch.linspace(-3, 3, 61).tolist())


def test_joint_margin_scores_decoded_triples():
    A, B = Span(0, 1, "PER"), Span(2, 3, "ORG")
    ex = Example("j:1", ["Ann", "at", "Acme"], "x.jpg", entities=[A, B], triples=[Triple(A, B, "member_of")])
    classes = joint_classes(["member_of"])
    grid = encode_joint(ex, classes)
    logits = torch.zeros(3, 3, len(classes))
    logits[..., 0] = 2.0  # None leads every cell ...
    logits.scatter_add_(-1, grid[..., None], torch.full((3, 3, 1), 1.5))  # ... the gold class trails by 0.5
    found = best_joint_margin([torch.log_softmax(logits, -1)], classes, [ex.triples], [ex.entities])
    assert found["f1_at_zero"] == 0.0 and found["f1"] == 1.0 and found["margin"] >= 0.5
