"""The offline zoo loads real weights with no network (make test runs this inside `unshare -n`)."""
import subprocess
import sys

import pytest
import torch
from PIL import Image

from common.errors import ZooError
from common.zoo import TextEncoder, build_vision_encoder, load_spacy, resolve_text_path
from common.zoo.__main__ import sample_photo


@pytest.fixture(scope="module")
def minilm():
    return TextEncoder("minilm-l6")


def test_minilm_embeddings_are_real(minilm):
    e = minilm.embed(["cat", "kitten", "stocks"])
    assert e.shape == (3, 384)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.3


def test_text_encoder_interface(minilm):
    batch = minilm.tokenize(["a dog", "a longer sentence about a dog"])
    out = minilm(**batch)
    B, T = batch["input_ids"].shape
    assert out["tokens"].shape == (B, T, 384) and out["pooled"].shape == (B, 384) and out["cls"].shape == (B, 384)


def test_attention_dropout_reaches_the_text_and_fusion_layers():
    from common.fusion import FusionEncoder, ModelConfig
    from common.zoo import set_attention_dropout

    enc = FusionEncoder(ModelConfig(vision="patch", image_size=32, fusion_init="split"))
    set_attention_dropout(enc, 0.0)
    attention = [m for m in enc.modules() if type(m).__name__.endswith("SelfAttention")]
    assert len(attention) == 6 and all(m.dropout.p == 0.0 for m in attention)  # 4 text layers + 2 moved to fusion
    assert enc.text.model.config.attention_probs_dropout_prob == 0.1  # what an export writes is untouched
    enc.train()
    kept = {id(m.dropout) for m in attention}
    for m in enc.modules():  # every other dropout off: the attention's is all that could still draw a mask
        if isinstance(m, torch.nn.Dropout) and id(m) not in kept:
            m.p = 0.0
    batch = enc.text.tokenize(["a dog on a beach", "a cat"])
    image = torch.zeros(2, 3, 32, 32)
    set_attention_dropout(enc, 0.5)  # the forward reads it: two training-mode passes differ ...
    assert not torch.equal(*(enc(**batch, image=image)["fused"] for _ in range(2)))
    set_attention_dropout(enc, 0.0)  # ... and at 0 they agree
    a, b = (enc(**batch, image=image)["fused"] for _ in range(2))
    assert torch.equal(a, b)
    with pytest.raises(ZooError, match="no self-attention dropout"):
        set_attention_dropout(torch.nn.Linear(2, 2), 0.0)


def test_efficientnet_ranks_real_photo():
    enc = build_vision_encoder("efficientnet-lite0").eval()
    x = enc.preprocess(Image.open(sample_photo()))[None]
    with torch.no_grad():
        out = enc(x)
        probs = enc.classify(x).softmax(-1)[0]
    assert out["patches"].shape == (1, 49, 1280) and out["pooled"].shape == (1, 1280)
    top5 = [enc.categories[i] for i in probs.topk(5).indices]
    assert top5[0] == "military uniform", top5  # Grace Hopper in her Navy uniform
    assert len(enc.categories) == 1000


@pytest.mark.parametrize("size", [224, 128])
def test_efficientnet_inference_copy_matches_eval_mode(size):
    """for_inference folds every batch norm into its conv, moves symmetric paddings into the convs and goes
    channels-last: the same features and logits as the eval-mode encoder, the original left trainable."""
    enc = build_vision_encoder("efficientnet-lite0", image_size=size).eval()
    fast = enc.for_inference()
    x = enc.preprocess(Image.open(sample_photo()))[None]
    with torch.no_grad():
        for key, value in enc(x).items():
            assert torch.allclose(fast(x)[key], value, atol=1e-4), key
        assert torch.allclose(fast.classify(x), enc.classify(x), atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules()) == 49  # the original is untouched
    assert fast.net._conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.preprocess is not None and fast.image_size == size and fast.grid == enc.grid


def test_efficientnet_other_size_changes_grid():
    enc = build_vision_encoder("efficientnet-lite0", image_size=128).eval()
    with torch.no_grad():
        out = enc(torch.zeros(2, 3, 128, 128))
    assert enc.grid == (4, 4) and out["patches"].shape == (2, 16, 1280)


def test_clip_random_init_warns_and_patch_encoder():
    with pytest.warns(UserWarning, match="random initialisation"):
        clip = build_vision_encoder("clip:ViT-B-32")
    with torch.no_grad():
        out = clip(torch.zeros(1, 3, 224, 224))
    assert out["patches"].shape == (1, 49, 768) and clip.dim == 768
    patch = build_vision_encoder("patch:16:64", image_size=64)
    assert patch(torch.zeros(2, 3, 64, 64))["patches"].shape == (2, 16, 64)


def test_spacy_tags_pos():
    doc = load_spacy()("The dog runs in the park.")
    assert [t.pos_ for t in doc][:3] == ["DET", "NOUN", "VERB"]


@pytest.mark.parametrize("spec,msg", [
    ("resnet50", "unknown vision encoder 'resnet50'"),
    ("clip:ViT-Nope", "unknown open_clip architecture"),
    ("clip:ViT-B-32:/nope/clip.pt", "CLIP weights file /nope/clip.pt does not exist"),
    ("patch:x", "expected patch"),
])
def test_bad_vision_specs(spec, msg):
    with pytest.raises(ZooError, match=msg):
        build_vision_encoder(spec)


def test_bad_text_names(tmp_path):
    with pytest.raises(ZooError, match="unknown text encoder 'bert-base-uncased'"):
        resolve_text_path("bert-base-uncased")
    with pytest.raises(ZooError, match="does not exist"):
        resolve_text_path(str(tmp_path / "missing"))
    with pytest.raises(ZooError, match="no config.json"):
        resolve_text_path(str(tmp_path))


def test_cli_errors_are_one_line(tmp_path):
    """A user's typo gives one line on stderr and exit status 2, no traceback."""
    r = subprocess.run([sys.executable, "-m", "common.zoo", "--vision", "effnet"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: unknown vision encoder 'effnet': use one of "
                                             "efficientnet-lite0, clip:<arch>[:<weights>], patch[:<patch>[:<dim>]]"]
    assert "Traceback" not in r.stderr
