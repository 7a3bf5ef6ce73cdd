"""Hostile inputs to pretraining's data preparation (pretrain.prepare, the NewsCLIPpings reader, --vocab): each is
skipped and counted in manifest.json or stops with a one-line error, and a failed run never costs the earlier
output. The corpus is made here, by code, from a small cut of the synthetic NewsCLIPpings."""
import json

import pytest
from PIL import Image

from common.errors import DataError


def small_news(synth_dir, tmp_path, n_items=6):
    """A copy of the synthetic NewsCLIPpings cut to the first `n_items` items (fast to prepare)."""
    import shutil

    news = tmp_path / "news"
    shutil.copytree(synth_dir / "newsclippings", news)
    data = json.loads((news / "data.json").read_text())[:n_items]
    ids = {e["id"] for e in data}
    anns = [a for a in json.loads((news / "annotations" / "train.json").read_text())["annotations"]
            if a["id"] in ids and a["image_id"] in ids]
    (news / "data.json").write_text(json.dumps(data))
    (news / "annotations" / "train.json").write_text(json.dumps({"annotations": anns}))
    return news, data, anns


def prepare_cli(news, out, *extra, images=None):
    from pretrain.prepare import main

    return main(["--annotations", str(news / "annotations" / "train.json"), "--data-json", str(news / "data.json"),
                 "--images", str(images or news), "--out", str(out), "--entities", "10", "--max-boxes", "2",
                 "--teacher-size", "32", "--shard-size", "4", "--top-k", "2", *extra])


def test_a_failed_re_run_of_prepare_keeps_the_earlier_shards(synth_dir, tmp_path):
    news, _, _ = small_news(synth_dir, tmp_path)
    out = tmp_path / "shards"
    assert prepare_cli(news, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(Exception, match="does not exist|not found|No such file"):
        prepare_cli(news, out, "--detector", f"yolo:{tmp_path / 'missing.pt'}")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # shards, vocab and manifest intact
    assert not list(tmp_path.glob(".shards.partial*"))  # the staging directory is gone


def test_wrong_images_root_is_an_error_naming_the_root_and_a_path(synth_dir, tmp_path):
    news, _, _ = small_news(synth_dir, tmp_path)
    out = tmp_path / "shards"
    with pytest.raises(DataError, match=r"skipped as 'image file missing'; looked for images under --images "
                                        r".*news/images \(e\.g\. .*news/images/images/\d+\.jpg\)"):
        prepare_cli(news, out, images=news / "images")
    assert not out.exists()


@pytest.mark.parametrize("change,reason", [
    (lambda anns, data: anns[0].update(falsified="false"), "malformed annotation"),
    (lambda anns, data: anns[0].update(similarity_score="high"), "malformed annotation"),
    (lambda anns, data: data[0].update(image_path=["a.jpg"]), "image missing from data.json"),
    (lambda anns, data: data[0].update(caption=["words"]), "caption missing from data.json"),
    (lambda anns, data: data.append("not an object"), "data.json entry not an object with an id"),
])
def test_newsclippings_wrong_field_types_are_skipped_and_counted(synth_dir, tmp_path, change, reason):
    from pretrain.newsclippings import read_pairs

    news, data, anns = small_news(synth_dir, tmp_path)
    _, clean = read_pairs(news / "annotations" / "train.json", news / "data.json", news)
    change(anns, data)
    (news / "data.json").write_text(json.dumps(data))
    (news / "annotations" / "train.json").write_text(json.dumps({"annotations": anns}))
    pairs, skipped = read_pairs(news / "annotations" / "train.json", news / "data.json", news)
    assert skipped[reason] >= 1 and not clean
    assert all(p.match in (0, 1) and isinstance(p.similarity, float) for p in pairs)


def test_duplicate_data_json_ids_are_an_error(synth_dir, tmp_path):
    from pretrain.newsclippings import read_pairs

    news, data, _ = small_news(synth_dir, tmp_path)
    (news / "data.json").write_text(json.dumps(data + [dict(data[0], caption="another caption")]))
    with pytest.raises(DataError, match=r"data.json: item 6: id '\d+' appears twice in data.json"):
        read_pairs(news / "annotations" / "train.json", news / "data.json", news)


@pytest.mark.parametrize("vocab,message", [
    ("{not json", "not a vocab.json written by pretrain.prepare"),
    ("[1, 2]", "expected a JSON object with entities"),
    ('{"entities": [], "relations": ["r"], "entity_prompt": "a {}", "relation_prompt": "b {}"}',
     "field entities: expected a non-empty list of names"),
    ('{"entities": ["man"], "relations": ["r"], "entity_prompt": "a photo", "relation_prompt": "b {}"}',
     "field entity_prompt: expected a prompt with one {} slot"),
])
def test_malformed_vocab_file_is_a_one_line_error(synth_dir, tmp_path, vocab, message):
    news, _, _ = small_news(synth_dir, tmp_path)
    path = tmp_path / "vocab.json"
    path.write_text(vocab)
    with pytest.raises(DataError, match=message.replace("{", r"\{").replace("}", r"\}")):
        prepare_cli(news, tmp_path / "out", "--vocab", str(path))


def test_zero_shard_size_is_rejected_by_the_parser(synth_dir, tmp_path, capsys):
    news, _, _ = small_news(synth_dir, tmp_path)
    with pytest.raises(SystemExit) as e:
        prepare_cli(news, tmp_path / "out", "--shard-size", "0")
    assert e.value.code == 2 and "--shard-size: must be >= 1, got 0" in capsys.readouterr().err


def test_a_png_reused_in_a_later_batch_is_stored_as_jpeg(synth_dir, tmp_path):
    import io
    import tarfile

    news, data, anns = small_news(synth_dir, tmp_path)
    png = news / "images" / "reused.png"
    Image.open(news / data[0]["image_path"]).save(png)
    data[0]["image_path"] = "images/reused.png"
    first = next(a for a in anns if a["image_id"] == data[0]["id"])
    (news / "data.json").write_text(json.dumps(data))
    (news / "annotations" / "train.json").write_text(json.dumps({"annotations": anns + [dict(first)] * 3}))
    out = tmp_path / "shards"
    assert prepare_cli(news, out, "--batch-size", "2") == 0  # the PNG's later pairs fall in later batches
    formats = []
    for shard in sorted(out.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".jpg"):
                    formats.append(Image.open(io.BytesIO(tar.extractfile(member).read())).format)
    assert len(formats) == len(anns) + 3 and set(formats) == {"JPEG"}
