"""Hostile inputs to the fine-tuning readers, config and images: each one either stops with a one-line DataError /
ConfigError naming file, line (or sentence) and field, or is skipped and counted — never a traceback from deep
inside, never a silently wrong example. The corpus is made here, by code."""
import json

import pytest
from PIL import Image

from common.config import load_config
from common.errors import ConfigError, DataError
from finetune.config import FinetuneConfig, task_config_path
from finetune.images import ImageStore
from finetune.readers import read_mjere, read_mnre, read_twitter

GOOD_MNRE = {"token": ["Ann", "met", "Bob"], "h": {"name": "Ann", "pos": [0, 1]}, "t": {"name": "Bob", "pos": [2, 3]},
             "img_id": "x.jpg", "relation": "/per/per/peer"}


def mnre_line(**change):
    d = {**GOOD_MNRE, **change}
    return repr(d)


@pytest.mark.parametrize("line,field", [
    (mnre_line(h={"name": "Ann"}), "field h: expected an object whose pos is [start, end] integers, got NoneType"),
    (mnre_line(t="Bob"), "field t: expected an object whose pos is [start, end] integers, got str 'Bob'"),
    (mnre_line(h={"pos": ["0", "1"]}), "field h: expected an object whose pos is [start, end] integers, got list"),
    (mnre_line(h={"pos": [0, 1, 2]}), "field h: expected an object whose pos is [start, end] integers, got list"),
    (mnre_line(t={"pos": [2.7, 3]}), "field t: expected an object whose pos is [start, end] integers, got list"),
    (mnre_line(h={"pos": [True, 1]}), "field h: expected an object whose pos is [start, end] integers"),
    (mnre_line(token="Ann met Bob"), "field token: expected a list of strings, got str 'Ann met Bob'"),
    (mnre_line(token=["Ann", 3, "Bob"]), "field token: expected a list of strings, got list"),
])
def test_mnre_structurally_wrong_records_name_file_line_and_field(tmp_path, line, field):
    path = tmp_path / "mnre_train.txt"
    path.write_text(mnre_line() + "\n" + line + "\n")
    with pytest.raises(DataError) as e:
        read_mnre(path)
    assert str(e.value).startswith(f"{path}:2: {field}"), str(e.value)


def test_mnre_span_outside_the_words_is_skipped_and_counted(tmp_path):
    path = tmp_path / "mnre_train.txt"
    path.write_text(mnre_line() + "\n" + mnre_line(t={"pos": [2, 9]}) + "\n")
    split = read_mnre(path)
    assert len(split) == 1 and split.skipped["span outside the tokens"] == 1


def mjere(tmp_path, packs):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(packs))
    return path


def ent(s, e, tag="PER"):
    return {"name": "x", "pos": [s, e], "tags": tag}


GOOD_PACK = {"token": ["Ann", "at", "Acme"], "img_id": "x.jpg",
             "label_list": [[{"beg_ent": ent(0, 1), "sec_ent": ent(2, 3, "ORG"), "relation": "member_of"}]]}


@pytest.mark.parametrize("pack,message", [
    (["Ann", "at", "Acme"], "sentence 1: expected an object with token, img_id, label_list, got list"),
    ({**GOOD_PACK, "label_list": [[{"sec_ent": ent(2, 3), "relation": "r"}]]},
     "sentence 1, label 0: expected an object with beg_ent, sec_ent, relation, got dict"),
    ({**GOOD_PACK, "label_list": "member_of"}, "sentence 1: field label_list: expected a list, got str"),
    ({**GOOD_PACK, "label_list": [[{"beg_ent": ent(0, 1), "sec_ent": "Acme", "relation": "r"}]]},
     "sentence 1, label 0: field sec_ent: expected an object whose pos is [start, end] integers, got str 'Acme'"),
    ({**GOOD_PACK, "label_list": [[{"beg_ent": ent(0, 1), "sec_ent": ent(2, 3), "relation": None}]]},
     "sentence 1, label 0: field relation: expected a name, got NoneType"),
    ({**GOOD_PACK, "token": "Ann at Acme"}, "sentence 1: field token: expected a list of strings, got str"),
    ({**GOOD_PACK, "label_list": [[{"beg_ent": ent(0, 1, "GPE"), "sec_ent": ent(2, 3), "relation": "r"}]]},
     "sentence 1, label 0: field beg_ent.tags: entity type 'GPE' is not one of"),
])
def test_mjere_structurally_wrong_entries_name_file_sentence_and_field(tmp_path, pack, message):
    path = mjere(tmp_path, [GOOD_PACK, pack])
    with pytest.raises(DataError) as e:
        read_mjere(path)
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)


def test_empty_conll_token_names_file_and_line_but_a_no_break_space_is_a_word(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("IMGID:1\nAnn\tB-PER\n\tO\n\n")
    with pytest.raises(DataError, match=r"train.txt:3: empty token before the tag 'O'"):
        read_twitter(path)
    path.write_text("IMGID:1\nAnn\tB-PER\n\xa0\tO\n\n")  # as in Twitter-2015's valid.txt
    assert read_twitter(path).examples[0].tokens == ["Ann", "\xa0"]


def test_a_decompression_bomb_is_counted_unreadable_not_raised(tmp_path, monkeypatch):
    Image.new("L", (120, 120)).save(tmp_path / "big.png")
    Image.new("L", (8, 8)).save(tmp_path / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 14,400 pixels > 2x the limit: PIL raises
    store = ImageStore(tmp_path)
    assert store.open("big.png")[1] == "unreadable" and store.open("small.png")[1] == "ok"
    assert store.report() == {"ok": 1, "missing": 0, "unreadable": 1}


@pytest.mark.parametrize("override,message", [
    ("train.epochs=0", "train.epochs: must be >= 1, got 0"),
    ("train.batch_size=0", "train.batch_size: must be >= 1, got 0"),
    ("data.max_train=-30", "data.max_train: must be >= 0, got -30"),
    ("train.warmup_ratio=1.5", "train.warmup_ratio: must be in [0.0, 0.99], got 1.5"),
    ("head.none_weight=0", "head.none_weight: must be >= 1e-06, got 0.0"),
    ("data.max_length=4", "data.max_length: must be in [8, 512], got 4"),
    ("train.attention_dropout=1.0", "train.attention_dropout: must be in [-1.0, 0.99], got 1.0"),
    ("data.missing_context=blank", "data.missing_context: 'blank' is not one of"),
])
def test_out_of_range_settings_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        load_config(FinetuneConfig, task_config_path("mner"), [override])


def test_mjere_relation_missing_from_train_is_a_miss_not_a_crash(tmp_path):
    from finetune.run import main

    data = tmp_path / "mjere"
    data.mkdir()
    other = {**GOOD_PACK, "label_list": [[{"beg_ent": ent(0, 1), "sec_ent": ent(2, 3, "LOC"), "relation": "lives_in"}]]}
    (data / "train.json").write_text(json.dumps([GOOD_PACK] * 6))
    for name in ("val.json", "test.json"):
        (data / name).write_text(json.dumps([GOOD_PACK, other]))
    run = tmp_path / "run"
    assert main(["--task", "mjere", "--data", str(data), "--init", "none", "--run-dir", str(run), "--tracking-uri",
                 "none", "train.epochs=1", "train.batch_size=4", "data.image=none", "model.image_size=64"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["truncation"]["test"]["triples_with_relations_unseen_in_train"] == 1
    assert m["test"]["n_gold"] == 2 and m["test"]["tp"] <= 1  # the unseen relation can only be missed


# --- prediction from a trained run --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mre_run(tmp_path_factory):
    """A one-epoch MRE run on the text-told relation set, with a short max_length so long posts get truncated."""
    from finetune.run import main
    from helpers.relation_text import write_relation_text

    root = tmp_path_factory.mktemp("predict")
    data = write_relation_text(root / "mnre", sizes={"train": 40, "val": 10, "test": 10})
    run = root / "run"
    assert main(["--task", "mre", "--data", str(data), "--init", "none", "--run-dir", str(run), "--tracking-uri",
                 "none", "train.epochs=1", "train.batch_size=8", "data.image=none", "model.image_size=64",
                 "data.max_length=24"]) == 0
    return run


def predict(run, *args):
    import contextlib
    import io

    from finetune.predict import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--run", str(run), *args])
    return code, [json.loads(x) for x in out.getvalue().splitlines()], err.getvalue()


@pytest.mark.parametrize("line,message", [
    ('["Ann", "met", "Bob"]', ":2: expected a JSON object with \"text\" or \"tokens\", got list"),
    ('{"text": "Ann met Bob", "head": [0.5, 1], "tail": [2, 3]}', ":2: field head: expected [start, end] word indices"),
    ('{"text": "Ann met Bob", "head": [0, 1], "tail": [2, 9]}', ":2: field tail: span [2, 9] is outside the 3 words"),
    ('{"text": "Ann met Bob", "head": [0, 1]}', ":2: relation extraction needs the entity pair"),
    ('{"tokens": "Ann met Bob", "head": [0, 1], "tail": [2, 3]}', ":2: field tokens: expected a list of non-empty"),
    ('{"text": ["Ann"], "head": [0, 1], "tail": [2, 3]}', ":2: field text: expected a string, got list"),
])
def test_predict_bad_jsonl_lines_name_file_line_and_field(mre_run, tmp_path, line, message):
    path = tmp_path / "posts.jsonl"
    path.write_text('{"text": "Ann met Bob", "head": [0, 1], "tail": [2, 3]}\n' + line + "\n")
    with pytest.raises(DataError) as e:
        predict(mre_run, "--jsonl", str(path))
    assert str(e.value).startswith(f"{path}{message}"), str(e.value)


def test_predict_non_utf8_line_and_missing_image_are_errors(mre_run, tmp_path):
    path = tmp_path / "posts.jsonl"
    path.write_bytes(b'{"text": "Ann met Bob", "head": [0, 1], "tail": [2, 3]}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"posts.jsonl:2: not UTF-8"):
        predict(mre_run, "--jsonl", str(path))
    with pytest.raises(DataError, match=r"--image .*nope.jpg does not exist"):
        predict(mre_run, "--text", "Ann met Bob", "--head", "0:1", "--tail", "2:3",
                "--image", str(tmp_path / "nope.jpg"))


def test_predict_says_what_truncation_and_missing_pictures_cost(mre_run, tmp_path):
    words = ["Ann", "Lee", "lives", "in"] + ["very"] * 40 + ["Oslo", "now"]
    posts = [{"tokens": words, "head": [0, 2], "tail": [44, 45], "image": "gone.jpg"},
             {"tokens": words[:4] + ["Oslo"], "head": [0, 2], "tail": [4, 5]}]
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in posts) + "\n")
    code, rows, err = predict(mre_run, "--jsonl", str(path), "--images", str(tmp_path))
    assert code == 0 and len(rows) == 2
    assert rows[0]["relations"][0]["label"] is None and "max_length=24" in rows[0]["warning"]
    assert rows[0]["truncated_words"] > 20 and rows[1]["truncated_words"] == 0 and "warning" not in rows[1]
    assert isinstance(rows[1]["relations"][0]["label"], str)
    assert "0 read, 1 missing, 0 unreadable" in err


def test_a_null_context_is_no_context_and_a_non_text_one_an_error(tmp_path):
    from finetune.context import GENERIC_CONTEXT, build_context

    path = tmp_path / "ctx.json"
    path.write_text(json.dumps({"a.jpg": None, "b.jpg": "a dog on a beach"}))
    texts = build_context(f"file:{path}").describe(["a.jpg", "b.jpg"], ImageStore(None))
    assert texts == [GENERIC_CONTEXT, "a dog on a beach"]
    path.write_text(json.dumps({"a.jpg": ["a", "dog"]}))
    with pytest.raises(DataError, match="the value for 'a.jpg' is list, not text"):
        build_context(f"file:{path}")


# --- files mmie wrote itself: caches and exports ----------------------------------------------------------------

def test_a_corrupt_cache_file_is_a_miss_that_gets_rebuilt(tmp_path, capsys):
    from finetune.pos import PosTagger, _key

    path = tmp_path / "pos.json"
    path.write_bytes(b"\x00{garbled")
    tags = PosTagger(cache=path).tag([["Ann", "runs"]])
    assert len(tags[0]) == 2 and "is unreadable" in capsys.readouterr().err
    assert json.loads(path.read_text())[_key(["Ann", "runs"])] == tags[0]  # rebuilt
    path.write_text(json.dumps({_key(["Ann", "runs"]): ["NOUN"]}))  # a garbled entry: wrong length
    assert PosTagger(cache=path).tag([["Ann", "runs"]]) == tags


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "model_config.json").write_text("{oops"), "model_config.json: not valid JSON"),
    (lambda d: (d / "model_config.json").write_text('{"format": "mmie-fusion-encoder/1", "model": {"txt": 1}}'),
     "model_config.json: field model: "),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000]),
     "model.safetensors: unreadable"),
])
def test_a_damaged_export_is_a_one_line_error(tmp_path, damage, message):
    from common.errors import MmieError
    from common.fusion import FusionEncoder, ModelConfig

    export = tmp_path / "export"
    FusionEncoder(ModelConfig(image_size=64)).export(export)
    damage(export)
    with pytest.raises(MmieError, match=message):
        FusionEncoder.from_export(export)


def test_a_tracking_server_that_does_not_answer_fails_fast(tmp_path):
    import socket
    import time

    from common.errors import MmieError
    from finetune.run import main

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(MmieError, match=f"--tracking-uri http://127.0.0.1:{port}: nothing answers at 127.0.0.1:{port}"):
        main(["--task", "mner", "--data", str(tmp_path), "--tracking-uri", f"http://127.0.0.1:{port}",
              "--run-dir", str(tmp_path / "run")])
    assert time.perf_counter() - t0 < 10  # before any data is read (tmp_path holds none)


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path):
    conll = tmp_path / "train.txt"
    conll.write_text("\ufeffIMGID:1\nAnn\tB-PER\n\n", encoding="utf-8")
    assert read_twitter(conll).examples[0].image == "1.jpg"
    mnre = tmp_path / "mnre_train.txt"
    mnre.write_text("\ufeff" + mnre_line() + "\n", encoding="utf-8")
    assert len(read_mnre(mnre)) == 1
    path = tmp_path / "train.json"
    path.write_text("\ufeff" + json.dumps([GOOD_PACK]), encoding="utf-8")
    assert len(read_mjere(path)) == 1


def test_a_full_disk_during_a_checkpoint_save_leaves_the_previous_one_readable(tmp_path):
    """The save runs in a child process whose file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) stands in for a full
    disk: writing past it fails with EFBIG, as ENOSPC would."""
    import subprocess
    import sys

    code = f"""
import resource, signal, sys, torch
from pathlib import Path
from common.errors import MmieError
from finetune import checkpoint
d = Path({str(tmp_path / 'ckpt')!r})
def state(epoch, n):
    return {{"epoch": epoch, "model": {{"w": torch.zeros(n)}}, "optimizer": {{}}, "scheduler": {{}},
            "rng": torch.get_rng_state(), "generator": torch.Generator().get_state(),
            "best": {{"epoch": 1}}, "history": []}}
checkpoint.save_best(d, 1, {{"w": torch.zeros(10)}})
checkpoint.save_epoch(d, state(1, 10))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    checkpoint.save_epoch(d, state(2, 1_000_000))  # 4 MB: past the limit
except MmieError as e:
    print("ERROR", e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ERROR cannot write" in out.stdout and "epoch-2.pt" in out.stdout and "--resume" in out.stdout
    from finetune.checkpoint import load_latest

    assert load_latest(tmp_path / "ckpt")["epoch"] == 1
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["best-epoch-1.safetensors", "epoch-1.pt"]


def test_an_image_root_holding_none_of_the_pictures_is_named_in_a_warning(tmp_path, capsys):
    from finetune.run import main
    from helpers.relation_text import write_relation_text

    data = write_relation_text(tmp_path / "mnre", sizes={"train": 8, "val": 4, "test": 4})
    (tmp_path / "pics").mkdir()
    assert main(["--task", "mre", "--data", str(data), "--images", str(tmp_path / "pics"), "--init", "none",
                 "--run-dir", str(tmp_path / "run"), "--tracking-uri", "none", "train.epochs=1",
                 "model.image_size=64", "data.context=none"]) == 0
    err = capsys.readouterr().err
    assert f"none of the pictures is under the image root {tmp_path / 'pics'} (e.g. {tmp_path / 'pics'}/rel_" in err
