import ast
import hashlib
import json
from collections import defaultdict

from PIL import Image

from common.synthetic import SynthConfig, generate
from common.synthetic.lexicon import AMBIGUOUS_NAMES
from common.synthetic.scenes import KEY_OBJECT_OF_TYPE

TAGS = {"O"} | {f"{p}-{t}" for p in "BI" for t in ("PER", "LOC", "ORG", "OTHER")}


def tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    cfg = SynthConfig(seed=3, news=30, twitter=30, mnre=30, image_size=64)
    generate(cfg, tmp_path / "a")
    generate(cfg, tmp_path / "b")
    generate(SynthConfig(seed=4, news=30, twitter=30, mnre=30, image_size=64), tmp_path / "c")
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")


def read_conll(path):
    tweets, cur = [], None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("IMGID:"):
            cur = {"img": line[6:], "tokens": [], "tags": []}
            tweets.append(cur)
        elif line:
            token, tag = line.split("\t")
            assert tag in TAGS, f"{path}:{n}: tag {tag}"
            cur["tokens"].append(token)
            cur["tags"].append(tag)
    return tweets


def test_twitter_is_conll_and_images_open(synth_dir):
    tw = synth_dir / "twitter"
    counts = {}
    for name in ("train.txt", "valid.txt", "test.txt"):
        tweets = read_conll(tw / name)
        counts[name] = len(tweets)
        for t in tweets:
            assert t["tokens"] and all(" " not in tok for tok in t["tokens"])
            assert t["tags"][0] != "I-" and any(tag != "O" for tag in t["tags"])
            for prev, tag in zip(["O"] + t["tags"], t["tags"]):  # generated BIO is strict
                if tag.startswith("I-"):
                    assert prev[2:] == tag[2:]
            with Image.open(tw / "images" / f"{t['img']}.jpg") as im:
                im.verify()
    assert counts == {"train.txt": 72, "valid.txt": 9, "test.txt": 9}


def test_mnre_lines_are_literals_with_consistent_spans(synth_dir):
    for split in ("train", "val", "test"):
        path = synth_dir / "mnre" / f"mnre_{split}.txt"
        for line in path.read_text().splitlines():
            d = ast.literal_eval(line)
            assert set(d) == {"token", "h", "t", "img_id", "relation"}
            for ent in (d["h"], d["t"]):
                s, e = ent["pos"]
                assert " ".join(d["token"][s:e]) == ent["name"]
            assert d["relation"] == "None" or d["relation"].startswith("/per/")
            Image.open(synth_dir / "mnre" / "images" / d["img_id"]).verify()


def test_newsclippings_schema(synth_dir):
    root = synth_dir / "newsclippings"
    data = {e["id"]: e for e in json.loads((root / "data.json").read_text())}
    assert all({"id", "caption", "image_path"} <= set(e) for e in data.values())
    seen_ids = set()
    for split in ("train", "val", "test"):
        anns = json.loads((root / "annotations" / f"{split}.json").read_text())["annotations"]
        assert len(anns) % 2 == 0
        for pristine, fake in zip(anns[::2], anns[1::2]):
            for a in (pristine, fake):
                assert set(a) == {"id", "image_id", "similarity_score", "falsified", "source_dataset"}
                assert a["id"] in data and a["image_id"] in data and 0 <= a["similarity_score"] <= 1
            assert pristine["falsified"] is False and pristine["id"] == pristine["image_id"]
            assert fake["falsified"] is True and fake["id"] == pristine["id"] and fake["image_id"] != fake["id"]
            seen_ids.add(pristine["id"])
    assert seen_ids == set(data)  # every item used once as a pristine pair, splits disjoint
    for e in data.values():
        with Image.open(root / e["image_path"]) as im:
            assert im.size == (96, 96)
    objects = json.loads((root / "objects.json").read_text())["objects"]
    assert set(map(int, objects)) == set(data)
    assert all(1 <= len(v) <= 3 for v in objects.values())


def test_image_decides_type_of_ambiguous_names(tmp_path):
    """The same surface name takes several types, and the image holds the key object of the gold type."""
    generate(SynthConfig(seed=0, news=3, twitter=400, mnre=3, image_size=64), tmp_path)
    types_of = defaultdict(set)
    for t in read_conll(tmp_path / "twitter" / "train.txt"):
        toks, tags = t["tokens"], t["tags"]
        for i, tag in enumerate(tags):
            if tag.startswith("B-"):
                j = i + 1
                while j < len(tags) and tags[j] == f"I-{tag[2:]}":
                    j += 1
                name = " ".join(toks[i:j])
                if name in AMBIGUOUS_NAMES:
                    types_of[name].add(tag[2:])
    assert len(types_of) > 10
    assert sum(len(v) >= 3 for v in types_of.values()) > len(types_of) / 2
    stats = json.loads((tmp_path / "stats.json").read_text())["twitter"]["train"]
    assert 0.4 < stats["text_only_ceiling"] < 0.8 and stats["image_resolved"] > stats["entities"] / 3
    assert set(KEY_OBJECT_OF_TYPE.values()) == {"person", "flag", "building", "trophy"}
