"""finetune/task.py: the named loss terms, their weights, and IMM's SW loss."""
from functools import partial

import pytest
import torch

from common.errors import ConfigError
from finetune import task
from finetune.config import AlignConfig, FinetuneConfig, FusionConfig, HeadConfig


def test_kl_to_signal_is_zero_when_p_equals_q_and_positive_otherwise():
    P = torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    q = P / P.sum(1, keepdim=True)
    assert task.kl_to_signal(q.log(), P).abs() < 1e-6  # p = softmax(log q) = q
    assert task.kl_to_signal(torch.zeros(3, 3), P) > 0.01  # p uniform, q not
    rows_off = P.clone()
    rows_off[1] = 0  # no target for row 1: left out, not a 0/0
    manual = task.kl_to_signal(torch.zeros(2, 3), rows_off[[0, 2]])
    assert torch.allclose(task.kl_to_signal(torch.zeros(3, 3), rows_off), manual)
    assert task.kl_to_signal(torch.zeros(3, 3), torch.zeros(3, 3)) == 0


def test_sw_loss_matches_its_equations_both_directions():
    torch.manual_seed(0)
    B, D, Dt = 4, 8, 5
    sw = {k: torch.randn(B, D) for k in ("sent_t", "sent_v", "word_t", "word_v")}
    teacher = torch.randn(B, 2, Dt).abs()  # positive embeddings: every cosine > 0, P has no zero row
    t_c, v_c = (torch.nn.functional.normalize(teacher[:, i], dim=-1) for i in (0, 1))
    P = (t_c @ v_c.T).clamp(min=0)

    def kl(logits, P):  # Eq. 6 written out
        p = logits.softmax(-1)
        q = P / P.sum(1, keepdim=True)
        return (p * (p / (q + 1e-8)).log()).sum(1).mean()

    def level(t, v):
        logits = torch.nn.functional.normalize(t, dim=-1) @ torch.nn.functional.normalize(v, dim=-1).T / 0.1
        return 0.5 * (kl(logits, P) + kl(logits.T, P.T))

    expect = 0.3 * level(sw["sent_t"], sw["sent_v"]) + 0.7 * level(sw["word_t"], sw["word_v"])
    got = task.sw_loss(sw, teacher, sentence=0.3, word=0.7, tau=0.1)
    assert torch.allclose(got, expect, atol=1e-6) and got > 0


@pytest.mark.parametrize("kind,extra", [("adaptive", {}), ("imm", {"sw_weight": 0.5})])
def test_the_total_is_the_weighted_sum_of_the_named_terms(kind, extra):
    from common.fusion import FusionEncoder, ModelConfig
    from finetune.batches import Features, collate
    from finetune.images import STAND_IN
    from finetune.model import Extractor

    torch.manual_seed(0)
    align = AlignConfig(alpha=0.3, beta=0.7, ips_weight=0.2, **extra)
    cfg = FinetuneConfig(fusion=FusionConfig(kind=kind, heads=4, isa_layers=1, ia_layers=1), align=align,
                         model=ModelConfig(vision="patch:16:32", image_size=32, fusion_layers=1))
    enc = FusionEncoder(cfg.model)
    model = Extractor(enc, cfg, ["O", "B-PER", "I-PER"]).train()
    images = {STAND_IN: torch.zeros(3, 32, 32), "a.jpg": torch.rand(3, 32, 32), "b.jpg": torch.rand(3, 32, 32)}
    # three posts of two words, each with a two-token context after its text: [CLS] w w [SEP] c c [SEP]
    feats = [Features([101, 2000 + i, 2001, 102, 3000 + i, 3001, 102], 4, [1, 2], [1, 1], [2, 2],
                      ["a.jpg", "b.jpg", "a.jpg"][i], [1, 2]) for i in range(3)]
    batch = collate(feats, images, 0, "mner")
    batch["teacher"] = torch.rand(3, 2, 6)
    out = task.losses(model, batch, torch.Generator().manual_seed(0))
    w = task.weights(cfg)
    assert w == {"main_loss": 1.0, "semantic_loss": 0.3, "modality_loss": 0.7, "ips_loss": 0.2,
                 "sw_loss": extra.get("sw_weight", 0.0)}
    assert torch.allclose(out["loss"], sum(w[k] * out[k] for k in task.TERMS))
    assert all(torch.isfinite(out[k]) for k in task.TERMS)
    assert out["semantic_loss"] != 0 and out["modality_loss"] != 0 and out["ips_loss"] != 0
    assert (out["sw_loss"] > 0) == (kind == "imm")


def test_label_smoothing_adds_the_emissions_cross_entropy_to_the_uniform_per_sentence():
    from common.fusion import FusionEncoder, ModelConfig
    from finetune.batches import Features, collate
    from finetune.images import STAND_IN
    from finetune.model import Extractor

    model_cfg = ModelConfig(vision="patch:16:32", image_size=32, fusion_layers=1)
    feats = [Features([101, 2000 + i, 2001, 2002, 102], 5, [1, 2, 3][: 3 - i], [1, 2, 0][: 3 - i],
                      [2, 2, 2][: 3 - i], STAND_IN, [1, 2, 0][: 3 - i]) for i in range(2)]  # three words, two
    batch = collate(feats, {STAND_IN: torch.zeros(3, 32, 32)}, 0, "mner")
    losses = {}
    for eps in (0.0, 0.2):
        torch.manual_seed(0)
        cfg = FinetuneConfig(model=model_cfg, head=HeadConfig(label_smoothing=eps, dropout=0.0))
        model = Extractor(FusionEncoder(cfg.model), cfg, ["O", "B-PER", "I-PER"]).eval()
        f = model.features(batch)
        losses[eps] = model.main_loss(f, batch)
        logp = torch.log_softmax(model.emissions(f["words"], batch), -1)
    # the two-word post's third word is padding: it adds nothing
    per_post = [-logp[0, :3].mean(-1).sum(), -logp[1, :2].mean(-1).sum()]
    assert torch.allclose(losses[0.2] - losses[0.0], 0.2 * sum(per_post) / 2, atol=1e-5)
    assert losses[0.2] > losses[0.0]
    with pytest.raises(ConfigError, match="label_smoothing"):
        HeadConfig(label_smoothing=1.5)


def test_finetune_parameter_groups_and_schedule():
    from common.fusion import FusionEncoder, ModelConfig
    from finetune.config import TrainConfig
    from finetune.model import Extractor
    from finetune.trainer import build_optimizer

    cfg = FinetuneConfig(model=ModelConfig(vision="patch:16:32", image_size=32, fusion_layers=1))
    enc = FusionEncoder(cfg.model)
    model = Extractor(enc, cfg, ["O", "B-PER", "I-PER"])
    t = TrainConfig(lr=3e-4, encoder_lr=1e-4, vision_lr=2e-5, crf_lr=5e-3, warmup_ratio=0.1)
    opt, sched = build_optimizer(model, enc.pretrained_prefixes(under="encoder."), t, total_steps=100)
    ids: dict[str, set] = {}
    for g in opt.param_groups:  # "<group>" and "<group>/no_decay" (norm weights, biases: weight decay 0)
        ids.setdefault(g["name"].split("/")[0], set()).update(id(p) for p in g["params"])
        assert g["weight_decay"] == (0.0 if g["name"].endswith("/no_decay") else t.weight_decay)
        assert all((p.ndim < 2) == g["name"].endswith("/no_decay") for p in g["params"])
    named = dict(model.named_parameters())
    assert {id(p) for n, p in named.items() if n.startswith("encoder.text.")} <= ids["encoder"]
    assert {id(p) for n, p in named.items() if n.startswith("encoder.fusion.")} <= ids["encoder"]  # text-upper copy
    assert {id(p) for n, p in named.items() if n.startswith("encoder.vision.")} == ids["vision"]
    assert {id(p) for n, p in named.items() if n.startswith("crf.")} == ids["crf"]
    assert {id(p) for n, p in named.items() if n.startswith(("fusion.", "emit.", "encoder.vision_proj"))} <= ids["rest"]
    assert sum(len(v) for v in ids.values()) == len(named)  # every parameter in exactly one group
    lrs = []
    for _ in range(100):
        lrs.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    assert lrs[0]["encoder"] == pytest.approx(1e-4 / 10)  # warm-up: 10 steps, linear
    assert lrs[9]["vision"] == pytest.approx(2e-5) and lrs[9]["crf"] == pytest.approx(5e-3)  # the peak
    assert lrs[55]["rest"] == pytest.approx(3e-4 * 0.5, rel=0.02)  # cosine half-way through the decay
    assert lrs[99]["rest"] < 3e-4 * 0.001  # down to ~0 at the end
    assert TrainConfig(vision_lr=-1.0, encoder_lr=7e-5).vision_lr < 0  # < 0: the vision encoder at encoder_lr
    opt2, _ = build_optimizer(model, enc.pretrained_prefixes(under="encoder."), TrainConfig(encoder_lr=7e-5), 10)
    assert {g["name"]: g["lr"] for g in opt2.param_groups}["vision/no_decay"] == 7e-5


@pytest.mark.parametrize("fusion_init", ["split", "text-upper", "fresh"])
def test_layer_decay_lowers_the_rate_layer_by_layer_down_the_text_path(fusion_init):
    """train.layer_decay: the last fusion layer at encoder_lr, each layer below it one factor less, the embeddings
    lowest; vision, CRF and heads keep their own rates; 1.0 leaves the single "encoder" group. Fresh fusion layers
    train at the head rate, so the text encoder's own top layer is the top."""
    from common.fusion import FusionEncoder, ModelConfig
    from finetune.config import TrainConfig
    from finetune.model import Extractor
    from finetune.trainer import build_optimizer

    cfg = FinetuneConfig(model=ModelConfig(vision="patch:16:32", image_size=32, fusion_layers=2,
                                           fusion_init=fusion_init))
    enc = FusionEncoder(cfg.model)
    model = Extractor(enc, cfg, ["O", "B-PER", "I-PER"])
    n_text = len(enc.text.model.encoder.layer)  # MiniLM-L6: 4 under split, 6 under text-upper and fresh
    fresh = fusion_init == "fresh"
    top = n_text + (0 if fresh else 2)
    below = partial(enc.layers_below_top, under="encoder.")
    t = TrainConfig(lr=3e-4, encoder_lr=1e-4, layer_decay=0.5, warmup_ratio=0.0)
    opt, _ = build_optimizer(model, enc.pretrained_prefixes(under="encoder."), t, 100, below)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    expect = {"encoder.fusion.1.output.dense.weight": 3e-4 if fresh else 1e-4,
              "encoder.fusion.0.output.dense.weight": 3e-4 if fresh else 5e-5,
              f"encoder.text.model.encoder.layer.{n_text - 1}.attention.self.query.weight": 1e-4 if fresh else 2.5e-5,
              "encoder.text.model.encoder.layer.0.attention.self.query.weight": 1e-4 * 0.5 ** (top - 1),
              "encoder.text.model.embeddings.word_embeddings.weight": 1e-4 * 0.5 ** top,
              "encoder.text.model.embeddings.LayerNorm.weight": 1e-4 * 0.5 ** top}
    for name, lr in expect.items():
        assert lr_of[id(named[name])] == pytest.approx(lr), name
    assert all(lr_of[id(p)] == t.encoder_lr for n, p in named.items() if n.startswith("encoder.vision."))
    assert all(lr_of[id(p)] == t.crf_lr for n, p in named.items() if n.startswith("crf."))
    assert {g["name"].split("/")[0] for g in opt.param_groups} >= {"encoder", f"encoder-{top}", "rest", "crf"}
    flat, _ = build_optimizer(model, enc.pretrained_prefixes(under="encoder."), TrainConfig(), 100, below)
    assert not any(g["name"].startswith("encoder-") for g in flat.param_groups)
    with pytest.raises(ConfigError, match="train.layer_decay"):
        TrainConfig(layer_decay=1.5)


@pytest.mark.parametrize("kind,form", [("adaptive", False), ("mgi", False), ("imm", False), ("adaptive", True)])
def test_a_saved_model_predicts_exactly_what_it_predicted_before_saving(kind, form, tmp_path):
    """form: with the optional word-form features (spaCy's entity tags, the character CNN), which must also reach
    the emissions, and the BIO-constrained CRF (its penalties are rebuilt from the saved config, not saved)."""
    from common.fusion import FusionEncoder, ModelConfig
    from finetune.batches import Features, collate
    from finetune.checkpoint import load_model_dir, save_model_dir
    from finetune.images import STAND_IN
    from finetune.model import Extractor

    torch.manual_seed(0)
    cfg = FinetuneConfig(fusion=FusionConfig(kind=kind, heads=4, isa_layers=1, ia_layers=1),
                         model=ModelConfig(vision="patch:16:32", image_size=32, fusion_layers=1),
                         head=HeadConfig(spacy_entities=form, char_dim=8 if form else 0, bio_constraints=form))
    enc = FusionEncoder(cfg.model)
    classes = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    model = Extractor(enc, cfg, classes).train()
    with torch.no_grad():  # move every weight off its initial value, as training would
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    images = {STAND_IN: torch.zeros(3, 32, 32), "a.jpg": torch.rand(3, 32, 32)}
    feats = [Features([101, 2000 + i, 2001, 2002, 102], 5, [1, 2, 3], [1, 1, 1], [2, 2, 2], "a.jpg", [0, 0, 0],
                      ents=[1, 2, 3] if form else [], chars=[[70 + i, 71], [72], [73, 74, 75]] if form else [])
             for i in range(4)]
    batch = collate(feats, images, 0, "mner")
    model.eval()
    before = model.predict(batch)
    emissions = model.emissions(model.features(batch)["words"], batch)
    save_model_dir(model, enc, cfg, classes, tmp_path / "model")
    loaded, loaded_cfg = load_model_dir(tmp_path / "model")
    assert loaded_cfg.fusion == cfg.fusion and loaded.predict(batch) == before
    assert model.crf.constrained == loaded.crf.constrained == form
    assert torch.equal(loaded.emissions(loaded.features(batch)["words"], batch), emissions)
    if form:  # other entity tags, other characters: other emissions
        for key in ("ents", "chars"):
            other = dict(batch, **{key: batch[key].flip(1)})
            assert not torch.allclose(model.emissions(model.features(other)["words"], other), emissions)


def test_align_methods_infonce_and_none():
    from finetune.contrastive import info_nce

    class Model(torch.nn.Module):  # only what align_losses reads: the config and the three projections
        def __init__(self, method):
            super().__init__()
            self.cfg = FinetuneConfig(align=AlignConfig(method=method, k=0))
            self.align_t, self.align_c, self.align_v = (torch.nn.Identity() for _ in range(3))

    torch.manual_seed(0)
    f = {"x_t": torch.randn(4, 8), "x_c": torch.randn(4, 8), "x_v": torch.randn(4, 8),
         "has_ctx": torch.tensor([True, True, False, True])}
    out = task.align_losses(Model("infonce"), f)
    ctx = f["has_ctx"]
    assert torch.allclose(out["semantic_loss"], info_nce(f["x_c"][ctx], f["x_t"][ctx], 0.1))
    assert torch.allclose(out["modality_loss"], info_nce(f["x_c"][ctx], f["x_v"][ctx], 0.1))
    none = task.align_losses(Model("none"), f)
    assert none["semantic_loss"] == 0 and none["modality_loss"] == 0 and none["ips_loss"] == 0


def test_image_none_means_no_picture_and_no_picture_context():
    from finetune.examples import Example
    from finetune.images import ImageStore
    from finetune.splits import context_source, decode_pictures

    cfg = FinetuneConfig()
    cfg.data.image = "none"
    assert context_source(cfg).name == "none"  # the offline describer is not even built
    cfg.data.context = "file:/nonexistent.json"
    with pytest.raises(Exception, match="does not exist"):  # a context file still applies with --image none
        context_source(cfg)
    stand_in = torch.zeros(3, 8, 8)
    examples = [Example(uid=str(i), tokens=["a"], image=f"{i}.jpg") for i in range(3)]
    images, status = decode_pictures(examples, ImageStore(None), lambda img: torch.ones(3, 8, 8), stand_in)
    assert all(images[ex.image] is stand_in for ex in examples) and set(status.values()) == {"missing"}


def test_teacher_signal_is_cached_atomically_and_read_back(tmp_path, monkeypatch):
    """IMM's pseudo-signal (label-bridge teacher) is computed once per dataset, written atomically into the cache
    (no temp file left) and read back equal; a damaged cache file is recomputed, not a crash."""
    from finetune.images import ImageStore
    from finetune.teacher_signal import teacher_embeddings

    monkeypatch.setenv("MMIE_CACHE", str(tmp_path / "cache"))
    texts, names = ["Obama visits Paris", "a dog in the park"], ["", "missing.jpg"]
    first = teacher_embeddings("label-bridge", texts, names, ImageStore(None))
    files = list((tmp_path / "cache" / "teacher").iterdir())
    assert first.shape[:2] == (2, 2) and [f.suffix for f in files] == [".safetensors"]
    assert torch.equal(teacher_embeddings("label-bridge", texts, names, ImageStore(None)), first)
    files[0].write_bytes(b"garbage")
    assert torch.equal(teacher_embeddings("label-bridge", texts, names, ImageStore(None)), first)
