"""Images, bridging contexts, POS tags and sub-word alignment of the fine-tuning inputs."""
import json

import pytest
import torch

from common.errors import DataError, MmieError
from common.zoo import TextEncoder
from finetune.baseline import main as baseline_main
from finetune.batches import build_features
from finetune.context import GENERIC_CONTEXT, build_context
from finetune.examples import Example, Span
from finetune.images import ImageStore
from finetune.labels import NER_TAGS
from finetune.pos import PosTagger
from finetune.readers import read_task, tags_to_spans
from finetune.subwords import clean_words, encode_batch, truncation_report


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMIE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_image_store_counts_missing_and_unreadable(synth_dir, tmp_path):
    root = synth_dir / "twitter" / "images"
    store = ImageStore(root)
    name = sorted(p.name for p in root.iterdir())[0]
    img, status = store.open(name)
    assert status == "ok" and img.size == (96, 96)
    assert store.open("nope.jpg")[1] == "missing"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "junk.jpg").write_bytes(b"not a jpeg at all")
    bad_store = ImageStore(bad)
    assert [bad_store.open(n)[1] for n in ("zero.jpg", "junk.jpg")] == ["unreadable", "unreadable"]
    assert store.report() == {"ok": 1, "missing": 1, "unreadable": 0}
    store.open(name), store.open("nope.jpg")  # opened again (the context source and the trainer both open)
    assert store.report() == {"ok": 1, "missing": 1, "unreadable": 0}  # each distinct picture counted once
    assert ImageStore(None).open("x.jpg")[0].size == (224, 224)


def test_image_store_decodes_a_large_jpeg_at_a_reduced_scale(tmp_path):
    """decode_size: a JPEG comes back at the smallest 1/2^k scale still >= decode_size on both sides; other
    formats and decode_size 0 at full size; the reduced picture is close to the full one after the model's
    resize."""
    from PIL import Image

    from common.detector import build_detector
    from common.zoo.vision import to_model_input
    from finetune.splits import decode_size

    rows = torch.linspace(0, 255, 1200)[:, None, None].expand(1200, 1600, 3)
    big = Image.fromarray(rows.to(torch.uint8).numpy())
    big.save(tmp_path / "big.jpg", quality=90)
    big.save(tmp_path / "big.png")
    full, _ = ImageStore(tmp_path).open("big.jpg")
    small, status = ImageStore(tmp_path, decode_size=224).open("big.jpg")
    assert status == "ok" and full.size == (1600, 1200) and small.size == (400, 300)  # 1/4: 1/8 would be 200 x 150
    assert ImageStore(tmp_path, decode_size=224).open("big.png")[0].size == (1600, 1200)
    a, b = (to_model_input(im, 224, (0.5,) * 3, (0.5,) * 3) for im in (full, small))
    assert (a - b).abs().mean() < 0.02
    # the store shared by the context source and the model decodes for the larger of the two; a context source
    # that reads whole pictures (a detector) gets them whole
    assert decode_size(128, build_context("offline")) == 224 and decode_size(384, build_context("offline")) == 384
    assert decode_size(128, build_context("none")) == 128
    assert decode_size(128, build_context("offline", detector=build_detector("crops"))) == 0


def test_offline_context_describes_caches_and_falls_back(synth_dir, cache):
    store = ImageStore(synth_dir / "twitter" / "images")
    names = [ex.image for ex in read_task("mner", synth_dir / "twitter")["test"].examples][:4] + ["missing.jpg"]
    ctx = build_context("offline")
    texts = ctx.describe(names, store)
    assert all(t.startswith("The image looks like ") for t in texts[:4]) and texts[4] == GENERIC_CONTEXT
    assert ctx.report() == {"described": 4, "missing image": 1}
    again = build_context("offline")  # a new process would read the same cache file
    assert again.describe(names, store) == texts and again.report() == {"cached": 4, "missing image": 1}
    bare = build_context("offline", missing="none")  # data.missing_context=none: no context without a picture
    assert bare.describe(names, store) == texts[:4] + [""] and bare.report() == {"cached": 4, "missing image": 1}
    with pytest.raises(MmieError, match="unknown missing-picture context 'blank'"):
        build_context("offline", missing="blank")


def test_file_context_counts_missing_entries(tmp_path, synth_dir):
    path = tmp_path / "ctx.json"
    path.write_text(json.dumps({"100000.jpg": "A person on a stage.", "300001": "A flag."}))
    ctx = build_context(f"file:{path}")
    out = ctx.describe(["100000.jpg", "300001.jpg", "999.jpg"], ImageStore(None))
    assert out == ["A person on a stage.", "A flag.", GENERIC_CONTEXT]
    assert ctx.report() == {"from file": 2, "missing from file": 1}
    assert build_context(f"file:{path}", missing="none").describe(["999.jpg"], ImageStore(None)) == [""]
    with pytest.raises(DataError, match="does not exist"):
        build_context(f"file:{tmp_path / 'nope.json'}")
    with pytest.raises(MmieError, match="unknown context source"):
        build_context("llava")


def test_pos_tags_align_to_dataset_tokens(cache):
    sents = [["RT", "@user", ":", "Jordan", "wins", "the", "cup", "#win"], ["New", "York", "is", "big"]]
    tagger = PosTagger()
    tags = tagger.tag(sents)
    assert [len(t) for t in tags] == [8, 4]  # one tag per dataset token, whatever spaCy would split
    assert tags[1][:2] == ["PROPN", "PROPN"] and tags[0][4] == "VERB"
    assert (cache / "pos" / "auto.json").is_file()
    assert PosTagger().tag(sents) == tags  # from the cache
    assert all(i > 0 for i in tagger.ids(sents)[1])


def test_spacy_entity_tags_align_to_words_and_are_cached(cache):
    """head.spacy_entities: one BIO tag over spaCy's types per dataset word, cached beside the POS tags; MRE's
    entity markers get "O"; collate pads them with 0 like the POS ids."""
    from finetune.batches import collate
    from finetune.images import STAND_IN
    from finetune.pos import ENT_INDEX

    sents = [["Barack", "Obama", "visited", "New", "York", "on", "Monday"], ["it", "rains"]]
    tags = PosTagger().entities(sents)
    assert [len(t) for t in tags] == [7, 2] and tags[1] == ["O", "O"]
    assert tags[0][:2] == ["B-PERSON", "I-PERSON"] and tags[0][3:5] == ["B-GPE", "I-GPE"]
    assert (cache / "pos" / "auto.ents.json").is_file() and PosTagger().entities(sents) == tags  # from the cache
    assert PosTagger().tag(sents)[0][0] == "PROPN"  # the POS cache is its own file

    tok = TextEncoder("minilm-l6").tokenizer
    ex = Example("x:1", sents[0], "", tags=["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O"])
    (f, g), _ = build_features("mner", [ex, Example("x:2", sents[1], "", tags=["O", "O"])], tok,
                               PosTagger().tag(sents), ["", ""], 64, [], ent_tags=tags, chars=True)
    assert f.ents == [ENT_INDEX[t] for t in tags[0]] and 0 not in f.ents
    assert f.chars[0] == [ord(c) + 2 for c in "Barack"]  # cased characters
    batch = collate([f, g], {"": torch.zeros(3, 8, 8), STAND_IN: torch.zeros(3, 8, 8)}, 0, "mner")
    assert batch["ents"].shape == (2, 7) and batch["ents"][1, 2:].eq(0).all()
    assert batch["chars"].shape == (2, 7, 7) and batch["chars"][1, 0, :2].tolist() == [ord("i") + 2, ord("t") + 2]

    # head.bio_constraints: MNER trains on its entities' BIO tags, so an entity the file begins with I- begins with B-
    given = {"B": ex.tags, "I": ["I-PER", "I-PER", "O", "I-LOC", "I-LOC", "O", "O"]}
    pair = [Example(f"x:{k}", sents[0], "", tags=t, entities=tags_to_spans(t)) for k, t in given.items()]
    (b, odd), _ = build_features("mner", pair, tok, PosTagger().tag(sents[:1]) * 2, ["", ""], 64, [], valid_bio=True)
    assert b.labels == odd.labels == [NER_TAGS.index(t) for t in ex.tags]
    (as_given,), _ = build_features("mner", pair[1:], tok, PosTagger().tag(sents[:1]), [""], 64, [])
    assert as_given.labels == [NER_TAGS.index(t) for t in given["I"]]  # off: the file's tags

    from finetune.examples import Triple
    mre = Example("x:3", sents[0], "", triples=[Triple(Span(0, 2), Span(3, 5), "None")])
    (m,), _ = build_features("mre", [mre], tok, PosTagger().tag(sents[:1]), [""], 64, ["None"], ent_tags=tags[:1])
    t = tags[0]  # <h> Barack Obama </h> visited <t> New York </t> on Monday: the markers are "O"
    assert m.ents == [ENT_INDEX[x] for x in ["O", *t[:2], "O", t[2], "O", *t[3:5], "O", *t[5:]]]


def test_char_cnn_ignores_padding():
    """A word's character-CNN vector does not depend on how far its row or its characters were padded; a padded
    word position (no characters) gives the projection's bias alone."""
    from finetune.model import CharCNN
    from finetune.shape import char_ids

    torch.manual_seed(0)
    cnn = CharCNN(16, 8)
    ids = char_ids(["Jordan", "#NWM7", "x" * 40])
    assert len(ids[2]) == 20 and char_ids([""]) == [[1]]
    short = torch.zeros(1, 3, 20, dtype=torch.long)
    for j, c in enumerate(ids):
        short[0, j, :len(c)] = torch.tensor(c)
    long = torch.cat([torch.nn.functional.pad(short, (0, 5)), torch.zeros(1, 2, 25, dtype=torch.long)], 1)
    a, b = cnn(short), cnn(long)
    assert torch.allclose(a, b[:, :3], atol=1e-6)
    assert torch.allclose(b[0, 3], cnn.proj.bias) and not torch.allclose(a[0, 0], a[0, 1])


def test_subword_alignment_and_truncation_report():
    tok = TextEncoder("minilm-l6").tokenizer
    ex = Example("x:1", ["Jordan", "Hendersonville", "\u200b", "wins", "Champions", "League"], "x.jpg",
                 entities=[Span(0, 2, "PER"), Span(4, 6, "MISC")])
    enc = encode_batch(tok, [ex.tokens], max_length=8)[0]
    assert enc.word_start[0] == 1 and enc.input_ids[0] == tok.cls_token_id
    assert enc.word_start[2] != -1  # a zero-width token still gets a (unknown) sub-token
    assert tok.convert_ids_to_tokens(enc.input_ids[enc.word_start[1]]) == "henderson"
    report = truncation_report([ex], [enc])
    assert report["sentences_truncated"] == 1 and report["entities_truncated"] == 1  # "Champions League" fell off
    full = encode_batch(tok, [ex.tokens], max_length=64, contexts=["a man holding a trophy"])[0]
    assert -1 not in full.word_start and len(full.input_ids) > full.n_text and full.context_cut == 0
    pair = tok(clean_words([ex.tokens], tok)[0], "a man holding a trophy".split(), is_split_into_words=True)
    assert full.input_ids == pair["input_ids"]  # = BERT's [CLS] text [SEP] context [SEP] when nothing is cut


def test_text_and_context_have_their_own_budgets():
    """A long generated description is cut at data.max_context_length; it never pushes tweet words out."""
    tok = TextEncoder("minilm-l6").tokenizer
    words = ["Jordan", "wins", "the", "Champions", "League", "again"]
    paragraph = " ".join(["a crowded stadium with many people holding flags"] * 40)  # ~320 sub-tokens
    enc = encode_batch(tok, [words], max_length=16, contexts=[paragraph], max_context_length=24)[0]
    assert -1 not in enc.word_start and enc.n_text == len(words) + 2
    assert len(enc.input_ids) == enc.n_text + 24 and enc.input_ids[-1] == tok.sep_token_id
    assert enc.context_cut == len(tok(paragraph.split(), add_special_tokens=False,
                                      is_split_into_words=True)["input_ids"]) - 23
    assert len(encode_batch(tok, [words], max_length=16, contexts=[paragraph], max_context_length=0)[0].input_ids) \
        == enc.n_text  # budget 0: no context segment
    ex = Example("x:1", words, "x.jpg", tags=["O"] * 3 + ["B-MISC", "I-MISC", "O"], entities=[Span(3, 5, "MISC")])
    feats, report = build_features("mner", [ex], tok, [["PROPN"] * 6], [paragraph], 16, [], max_context_length=24)
    assert report["contexts_truncated"] == 1 and report["sentences_truncated"] == 0
    assert report["context_subtokens_cut"] == enc.context_cut


def test_spacy_baseline_cli(synth_dir, tmp_path, capsys):
    assert baseline_main(["spacy", "--data", str(synth_dir / "twitter"), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "test_spacy.json").read_text())
    assert 0.0 <= report["f1"] <= 1.0 and report["n_gold"] > 0
    assert (tmp_path / "test_spacy_f1.png").is_file()
    assert "spaCy zero-shot NER" in capsys.readouterr().out


def test_word_shapes_see_what_the_uncased_encoder_cannot():
    from finetune.shape import word_shape

    shapes = {w: word_shape(w) for w in ["George", "NASA", "I", "obama", "iPhone", "@user", "#NWM7",
                                         "http://t.co/Z3", "2015", "B2B", ":", "<h>"]}
    assert shapes == {"George": "title", "NASA": "upper", "I": "upper1", "obama": "lower", "iPhone": "mixed",
                      "@user": "mention", "#NWM7": "hashtag", "http://t.co/Z3": "url", "2015": "digits",
                      "B2B": "alnum", ":": "punct", "<h>": "marker"}


def test_collate_encodes_each_distinct_picture_once():
    import torch

    from finetune.batches import Features, collate

    grey, photo = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    images = {"a.jpg": grey, "b.jpg": grey, "c.jpg": photo}  # a and b are both missing: one shared tensor
    feats = [Features([101, 7, 102], 3, [1], [1], [2], name, [0]) for name in ["a.jpg", "c.jpg", "b.jpg", "c.jpg"]]
    batch = collate(feats, images, 0, "mner")
    assert batch["images"].shape[0] == 2
    assert torch.equal(batch["images"][batch["image_index"]], torch.stack([grey, photo, grey, photo]))
    assert batch["stand_in"].tolist() == [False, False]  # no STAND_IN key: nothing is flagged


def test_length_bucketed_batches_cover_every_example_once():
    import random

    from finetune.batches import batches

    lengths = [random.Random(i).randint(5, 120) for i in range(1000)]
    for pool in (0, 4, 50):
        got = batches(lengths, 16, True, seed=3, pool=pool)
        flat = [i for b in got for i in b]
        assert sorted(flat) == list(range(1000)) and all(len(b) <= 16 for b in got)
        assert len(got) == -(-1000 // 16)  # as many steps as plain batching: the trainer's steps per epoch
        assert got == batches(lengths, 16, True, seed=3, pool=pool)  # a function of the seed
        assert got != batches(lengths, 16, True, seed=4, pool=pool)  # ... and differs between epochs

    def padding(bs):  # padded positions / real positions
        return sum(len(b) * max(lengths[i] for i in b) for b in bs) / sum(lengths) - 1

    assert padding(batches(lengths, 16, True, 3, pool=50)) < 0.1 < padding(batches(lengths, 16, True, 3, pool=0))
    evaluation = batches(lengths, 16, False, 0)
    assert [lengths[i] for b in evaluation for i in b] == sorted(lengths, reverse=True)


def test_stand_in_vision_features_are_computed_once_and_refreshed_when_weights_change():
    import torch

    from finetune.batches import Features, collate
    from finetune.config import FinetuneConfig
    from finetune.images import STAND_IN, default_image
    from finetune.model import Extractor
    from common.fusion import FusionEncoder, ModelConfig

    cfg = FinetuneConfig()
    enc = FusionEncoder(ModelConfig(vision="efficientnet-lite0", image_size=64))
    model = Extractor(enc, cfg, ["O", "B-PER", "I-PER"]).train()
    grey = enc.vision.preprocess(default_image())
    photo = torch.rand(3, 64, 64)
    images = {STAND_IN: grey, "missing.jpg": grey, "photo.jpg": photo}
    def batch_of(*names):
        return collate([Features([101, 7, 102], 3, [1], [1], [2], n, [0]) for n in names], images, 0, "mner")

    calls = []
    hook = enc.vision.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    missing = batch_of("missing.jpg")
    assert missing["stand_in"].tolist() == [True]
    first, again = model.encode_images(missing), model.encode_images(missing)
    assert calls == [1] and torch.equal(first["cls"], again["cls"])  # computed once, then reused
    enc.vision.eval()
    with torch.no_grad():
        ref = enc.encode_image(grey[None])  # eval mode (batch-norm running statistics), no gradient
    enc.vision.train()
    assert torch.allclose(first["cls"], ref["cls"], atol=1e-5)
    first["cls"].sum().backward()
    assert all(p.grad is None for p in enc.vision.parameters()) and enc.vision_cls_proj.weight.grad is not None
    calls.clear()
    model.encode_images(missing)
    assert calls == []  # still cached
    with torch.no_grad():
        next(enc.vision.parameters()).add_(0.5)  # as an optimizer step would
    model.encode_images(missing)
    assert calls == [1]  # the weights changed: recomputed
    mixed = batch_of("missing.jpg", "photo.jpg")
    assert mixed["stand_in"].tolist() == [True, False]
    calls.clear()
    out = model.encode_images(mixed)
    assert calls == [1]  # only the photo goes through the vision encoder, with gradient
    out["patches"][1].sum().backward()
    assert any(p.grad is not None for p in enc.vision.parameters())
    hook.remove()


def test_prediction_keeps_the_order_of_the_examples():
    import torch

    from finetune.batches import Features, predict_features

    class Echo(torch.nn.Module):  # predicts each example's length, to see where it lands
        def predict(self, batch):
            return batch["attention_mask"].sum(1).tolist()

    feats = [Features([101] + [7] * n + [102], n + 2, [1], [1], [2], "a", [0]) for n in (3, 9, 1, 5, 7)]
    images = {"a": torch.zeros(3, 4, 4)}
    assert predict_features(Echo(), feats, images, 0, "mner", batch_size=2) == [5, 11, 3, 7, 9]


def test_an_empty_cache_variable_is_unset_not_the_working_directory(tmp_path, monkeypatch):
    from common.offline import cache_dir
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MMIE_CACHE", "")
    assert cache_dir() == tmp_path / "home" / ".cache" / "mmie"
    assert list(tmp_path.iterdir()) == [tmp_path / "home"]  # nothing written where the command ran


def test_each_python_environment_builds_deepspeeds_ops_in_its_own_folder(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from common.offline import extensions_dir

    here = extensions_dir(tmp_path)
    assert here.parent == tmp_path / "torch_extensions" and here == extensions_dir(tmp_path)  # stable per venv
    monkeypatch.setattr(sys, "prefix", "/elsewhere/.venv")
    assert extensions_dir(tmp_path) != here  # another clone's venv: another folder, so neither rebuilds the other's
    env = {k: v for k, v in os.environ.items() if k != "TORCH_EXTENSIONS_DIR"}
    got = subprocess.run([sys.executable, "-c", "import common, os; print(os.environ['TORCH_EXTENSIONS_DIR'])"],
                         capture_output=True, text=True, env={**env, "MMIE_CACHE": str(tmp_path)}, check=True)
    assert got.stdout.strip() == str(here)  # what every process of this venv uses (common sets it on import)
