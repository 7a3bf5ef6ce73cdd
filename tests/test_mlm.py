"""The optional image-grounded MLM pretraining term: masks (a pure function of seed, epoch and key) and the task's
second pass, which trains the fusion layers' text positions."""
import pytest
import torch

from common.fusion import FusionEncoder, ModelConfig
from pretrain.config import LossConfig
from common.labels import IGNORE
from pretrain.masking import mask_tokens
from pretrain.task import PromuTask

MASK, VOCAB, SPECIAL = 103, 1000, {0, 101, 102}


def batch_ids(n_rows=4, length=40):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (n_rows, length), generator=g) % VOCAB + 200
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    mask = torch.ones_like(ids)
    ids[1, 30:], mask[1, 30:] = 0, 0  # a padded row
    return ids, mask


def masks(ids, attn, keys, active=None, prob=0.15, epoch=0, seed=0):
    return mask_tokens(ids, attn, keys, active or [True] * len(keys), prob, MASK, VOCAB, SPECIAL, seed, epoch)


def test_masks_follow_bert_and_are_a_function_of_seed_epoch_and_key():
    ids, attn = batch_ids()
    keys = ["a", "b", "c", "d"]
    masked, labels = masks(ids, attn, keys)
    picked = labels != IGNORE
    assert torch.equal(labels[picked], ids[picked])  # labels are the original tokens
    assert not picked[:, 0].any() and not picked[:, -1].any() and not picked[1, 29:].any()  # no special, no pad
    assert torch.equal(masked[~picked], ids[~picked])  # only chosen positions change
    # the same (seed, epoch, key) gives the same masks whatever the batch around it; another epoch or seed differs
    again, again_labels = masks(ids[[2, 0]], attn[[2, 0]], ["c", "a"])
    assert torch.equal(again, masked[[2, 0]]) and torch.equal(again_labels, labels[[2, 0]])
    assert not torch.equal(masks(ids, attn, keys, epoch=1)[1], labels)
    assert not torch.equal(masks(ids, attn, keys, seed=1)[1], labels)
    # inactive rows (falsified pairs) stay whole
    m, lab = masks(ids, attn, keys, active=[True, False, True, False])
    assert (lab[[1, 3]] == IGNORE).all() and torch.equal(m[[1, 3]], ids[[1, 3]])


def test_mask_rates_over_many_rows():
    ids, attn = batch_ids(n_rows=400, length=52)
    masked, labels = masks(ids, attn, [str(i) for i in range(400)])
    picked = labels != IGNORE
    maskable = attn.bool().clone()
    maskable[:, 0] = maskable[:, -1] = False
    assert picked.sum() / maskable.sum() == pytest.approx(0.15, abs=0.01)
    assert (masked[picked] == MASK).float().mean() == pytest.approx(0.8, abs=0.03)
    assert (masked[picked] == ids[picked]).float().mean() == pytest.approx(0.1 + 0.1 / VOCAB, abs=0.03)
    assert picked.any(-1).all()  # every row has at least one mask, even a short one
    short, short_labels = masks(ids[:1, :3], attn[:1, :3], ["x"], prob=0.0)
    assert (short_labels != IGNORE).sum() == 1


def tiny_task(**weights):
    enc = FusionEncoder(ModelConfig(vision="patch", image_size=32, fusion_layers=1))
    return PromuTask(enc, 5, 3, LossConfig(**weights))


def task_batch(task, match):
    tok = task.encoder.tokenizer(["a dog and a flag at the park", "two boats near a tree"], padding=True,
                                 return_tensors="pt")
    B = len(match)
    ids, labels = mask_tokens(tok["input_ids"], tok["attention_mask"], ["k0", "k1"], [m > 0.5 for m in match],
                              0.3, task.encoder.tokenizer.mask_token_id, len(task.encoder.tokenizer),
                              set(task.encoder.tokenizer.all_special_ids), 0, 0)
    P = task.encoder.vision.num_patches
    return {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"], "image": torch.randn(B, 3, 32, 32),
            "match": torch.tensor(match), "box_mask": torch.zeros(B, 2, P, dtype=torch.bool),
            "box_valid": torch.zeros(B, 2, dtype=torch.bool), "ent_target": torch.zeros(B, 2, 5),
            "rel_target": torch.full((B, 3), 1 / 3), "mlm_input_ids": ids, "mlm_labels": labels}


def test_mlm_term_is_on_by_default_and_trains_the_fusion_text_positions():
    assert tiny_task().terms == ("itm", "cit", "coe", "cir", "mlm")
    assert tiny_task(mlm=0.0).terms == ("itm", "cit", "coe", "cir") and tiny_task(mlm=0.0).heads.mlm is None
    torch.manual_seed(0)
    task = tiny_task(itm=0.0, cit=0.0, coe=0.0, cir=0.0, mlm=1.0)
    assert task.terms[-1] == "mlm"
    words = task.encoder.text.model.embeddings.word_embeddings.weight
    assert torch.equal(task.heads.mlm.decoder.weight, words) and task.heads.mlm.decoder.weight is not words
    out = task(task_batch(task, [1.0, 0.0]))
    assert out["mlm_masked"].item() >= 1 and 0 < out["mlm_loss"].item() < 20
    out["loss"].backward()
    fusion_grad = sum(p.grad.abs().sum() for p in task.encoder.fusion.parameters() if p.grad is not None)
    image_grad = task.encoder.vision_proj.weight.grad
    assert fusion_grad > 0 and image_grad is not None and image_grad.abs().sum() > 0  # the image is read


def test_mlm_without_matched_pairs_is_a_zero_that_keeps_the_head_in_the_graph():
    task = tiny_task(mlm=1.0)
    out = task(task_batch(task, [0.0, 0.0]))
    assert out["mlm_loss"].item() == 0.0 and out["mlm_masked"].item() == 0
    out["loss"].backward()
    assert task.heads.mlm.decoder.weight.grad is not None
