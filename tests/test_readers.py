import json
import shutil

import pytest

from common.errors import DataError
from finetune.examples import Span
from finetune.mjere import build_from_mnre
from finetune.readers import read_mnre, read_task, read_twitter


def test_twitter2015_counts(real_data):
    splits = read_task("mner", real_data / "twitter2015")
    assert {k: len(v) for k, v in splits.items()} == {"train": 4000, "dev": 1000, "test": 3257}
    test = splits["test"].examples
    assert sum(len(ex.entities) for ex in test) == 5207
    # tags are kept exactly as given: 135 test entities begin with an I- tag
    assert sum(ex.tags[e.start].startswith("I-") for ex in test for e in ex.entities) == 135
    assert {e.label for ex in test for e in ex.entities} == {"PER", "LOC", "ORG", "MISC"}


def test_mnre_counts_and_upstream_val_name(real_data, tmp_path):
    splits = read_task("mre", real_data / "mnre")
    assert {k: len(v) for k, v in splits.items()} == {"train": 12247, "dev": 1624, "test": 1614}
    assert len({ex.triples[0].label for ex in splits["train"].examples}) == 23
    for name in ("mnre_train.txt", "mnre_test.txt"):
        shutil.copy(real_data / "mnre" / name, tmp_path / name)
    shutil.copy(real_data / "mnre" / "mnre_val.txt", tmp_path / "mnre_val .txt")  # the upstream spelling
    assert len(read_task("mre", tmp_path)["dev"]) == 1624


def test_mjere_derivation_matches_published_counts(real_data, tmp_path):
    counts = build_from_mnre(real_data / "mnre", tmp_path)
    assert {k: (v["sentences"], v["triples"]) for k, v in counts.items()} == {
        "train": (3618, 4503), "dev": (496, 624), "test": (475, 640)}
    splits = read_task("mjere", tmp_path)
    assert sum(len(ex.triples) for ex in splits["test"].examples) == 640
    first = json.loads((tmp_path / "train.json").read_text())[0]
    assert set(first) == {"token", "img_id", "label_list"}
    triple = first["label_list"][0][0]
    assert set(triple) == {"beg_ent", "sec_ent", "relation"}
    assert triple["beg_ent"]["tags"] in {"PER", "ORG", "LOC", "MISC"}


def test_synthetic_data_reads(synth_dir, tmp_path):
    assert len(read_task("mner", synth_dir / "twitter")["train"]) == 72
    mre = read_task("mre", synth_dir / "mnre")
    assert all(ex.triples[0].head.end <= len(ex.tokens) for ex in mre["train"].examples)
    build_from_mnre(synth_dir / "mnre", tmp_path)
    assert len(read_task("mjere", tmp_path)["train"]) > 0


def write(tmp_path, name, content, mode="w"):
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return p


@pytest.mark.parametrize("content,msg", [
    ("IMGID:1\nhello O\n", r"x.txt:2: expected 'token<TAB>tag'"),
    ("IMGID:1\nhello\tB-XYZ\n", r"x.txt:2: tag 'B-XYZ' is outside the scheme"),
    ("hello\tO\n", r"x.txt:1: token line outside a tweet"),
    (b"IMGID:1\nhello\tO\n\xff\xfe\tO\n", r"x.txt:3: not UTF-8"),
])
def test_twitter_bad_input_names_file_and_line(tmp_path, content, msg):
    with pytest.raises(DataError, match=msg):
        read_twitter(write(tmp_path, "x.txt", content))


def test_twitter_empty_tweet_is_skipped_and_counted(tmp_path):
    split = read_twitter(write(tmp_path, "x.txt", "IMGID:1\n\nIMGID:2\nParis\tB-LOC\nrocks\tO\n"))
    assert len(split) == 1 and split.skipped == {"empty tweet": 1}
    assert split.examples[0].entities == [Span(0, 1, "LOC")] and split.examples[0].image == "2.jpg"


def mnre_line(**kw):
    d = {"token": ["A", "met", "B"], "h": {"name": "A", "pos": [0, 1]}, "t": {"name": "B", "pos": [2, 3]},
         "img_id": "x.jpg", "relation": "/per/per/peer"}
    d.update(kw)
    return repr(d)


def test_mnre_bad_input(tmp_path):
    with pytest.raises(DataError, match=r"m.txt:2: not a Python dict literal"):
        read_mnre(write(tmp_path, "m.txt", mnre_line() + "\n{'token': [\n"))
    with pytest.raises(DataError, match=r"m.txt:1: unknown relation label '/per/per/friend'"):
        read_mnre(write(tmp_path, "m.txt", mnre_line(relation="/per/per/friend") + "\n"))
    with pytest.raises(DataError, match=r"m.txt:1: expected a dict"):
        read_mnre(write(tmp_path, "m.txt", "[1, 2]\n"))
    split = read_mnre(write(tmp_path, "m.txt", "\n".join([
        mnre_line(), mnre_line(t={"name": "B", "pos": [2, 9]}), mnre_line(token=[]), mnre_line()]) + "\n"))
    assert len(split) == 2
    assert split.skipped == {"span outside the tokens": 1, "empty sentence": 1}


def test_missing_split_file_is_clear(tmp_path):
    with pytest.raises(DataError, match="no dev file"):
        write(tmp_path, "train.txt", "")
        read_task("mner", tmp_path)
    with pytest.raises(DataError, match="unknown task"):
        read_task("ner", tmp_path)
