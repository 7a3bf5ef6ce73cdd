"""Pretraining data: NewsCLIPpings -> teacher soft labels -> WebDataset shards -> streaming reader."""
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.errors import DataError, MmieError
from common.ports import free_port
from common.zoo.text import TextEncoder
from pretrain.data import (Collate, EpochStages, ImageSpec, box_patch_mask, build_pipeline, make_loader,
                           read_shard_dir)
from pretrain.prepare import parse, prepare

HERE = Path(__file__).parent


def prepare_args(news, out, *extra):
    return parse([
        "--annotations", str(news / "annotations" / "train.json"), "--data-json", str(news / "data.json"),
        "--images", str(news), "--out", str(out), "--entities", "30", "--max-boxes", "3", "--teacher-size", "64",
        "--shard-size", "20", "--top-k", "3", *extra])


@pytest.fixture(scope="module")
def bad_news(synth_dir, tmp_path_factory):
    """The synthetic NewsCLIPpings with one of each kind of bad input."""
    news = tmp_path_factory.mktemp("news") / "newsclippings"
    shutil.copytree(synth_dir / "newsclippings", news)
    anns = json.loads((news / "annotations" / "train.json").read_text())["annotations"]
    data = json.loads((news / "data.json").read_text())
    by_id = {e["id"]: e for e in data}
    pristine = [a["id"] for a in anns if not a["falsified"]]
    (news / by_id[pristine[0]]["image_path"]).unlink()  # missing image file
    (news / by_id[pristine[1]]["image_path"]).write_bytes(b"")  # zero-byte JPEG
    raw = (news / by_id[pristine[2]]["image_path"]).read_bytes()
    (news / by_id[pristine[2]]["image_path"]).write_bytes(raw[: len(raw) // 3])  # truncated JPEG
    by_id[pristine[3]]["caption"] = ""  # caption missing
    anns.insert(5, {"id": pristine[4], "falsified": False})  # malformed entry (no image_id)
    (news / "annotations" / "train.json").write_text(json.dumps({"annotations": anns}))
    (news / "data.json").write_text(json.dumps(data))
    return news, len(anns), [by_id[p]["image_path"] for p in pristine[:3]]


@pytest.fixture(scope="module")
def shards(bad_news, tmp_path_factory):
    news, _, _ = bad_news
    out = tmp_path_factory.mktemp("shards")
    manifest = prepare(prepare_args(news, out))
    return out, manifest


def annotations_using(news, image_path):
    """How many annotations pair a caption with this image (pristine or falsified)."""
    anns = json.loads((news / "annotations" / "train.json").read_text())["annotations"]
    data = {e["id"]: e for e in json.loads((news / "data.json").read_text())}
    return sum(1 for a in anns if "image_id" in a and data[a["image_id"]]["image_path"] == image_path)


def test_prepare_counts_every_bad_input(bad_news, shards):
    news, n_ann, bad_images = bad_news
    out, m = shards
    s = m["skipped"]
    assert s["malformed annotation"] == 1 and s["caption missing from data.json"] == 2  # pristine + its falsified
    assert s["image file missing"] == annotations_using(news, bad_images[0])
    assert s["image unreadable"] == annotations_using(news, bad_images[1]) + annotations_using(news, bad_images[2])
    assert m["samples"] + sum(s.values()) == n_ann == m["pairs_in"]  # nothing silently lost
    assert m["samples"] == sum(m["samples_per_shard"]) and len(m["shards"]) == len(m["samples_per_shard"])
    vocab = json.loads((out / "vocab.json").read_text())
    assert "man" in vocab["entities"] and "member of" in vocab["relations"] and len(vocab["relations"]) > 200
    assert vocab["teacher"] == "label-bridge" and vocab["digest"] == m["vocab_digest"]


def test_prepare_is_deterministic(bad_news, shards, tmp_path):
    news, _, _ = bad_news
    out, m = shards
    prepare(prepare_args(news, tmp_path / "again"))
    digest = lambda d: [hashlib.sha1((d / s).read_bytes()).hexdigest() for s in m["shards"]]  # noqa: E731
    assert digest(out) == digest(tmp_path / "again")


def test_shard_sample_contract(shards):
    import webdataset as wds

    out, m = shards
    sample = next(iter(wds.WebDataset(str(out / m["shards"][0]), shardshuffle=False).decode("pil")))
    assert set(sample) >= {"__key__", "jpg", "txt", "json"}
    meta = sample["json"]
    assert meta["match"] in (0, 1) and len(meta["boxes"]) == len(meta["ent_ids"]) == len(meta["ent_probs"]) == 3
    probs = meta["rel_probs"]  # top-k of a softmax: descending, positive, at most 1 in total
    assert len(meta["rel_ids"]) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert {"caption_id", "image_id", "width", "height"} <= set(meta)


def test_top_k_0_keeps_the_full_soft_label_distributions(synth_dir, tmp_path):
    """PROMU trains on the teacher's whole softmax (configs/promu.yaml): --top-k 0 stores every entry."""
    import webdataset as wds

    out = tmp_path / "full"
    prepare(prepare_args(synth_dir / "newsclippings", out, "--top-k", "0"))
    vocab = json.loads((out / "vocab.json").read_text())
    sample = next(iter(wds.WebDataset(str(next(out.glob("*.tar"))), shardshuffle=False)))
    meta = json.loads(sample["json"])
    assert vocab["top_k"] == 0 and len(meta["rel_ids"]) == len(vocab["relations"])
    assert sorted(meta["rel_ids"]) == list(range(len(vocab["relations"]))) and abs(sum(meta["rel_probs"]) - 1) < 1e-3
    assert all(len(ids) == len(vocab["entities"]) for ids in meta["ent_ids"])


def loader(out, batch_size=8, workers=0, **kw):
    shards, manifest, vocab = read_shard_dir(out)
    collate = Collate(TextEncoder("minilm-l6").tokenizer, ImageSpec(64, (0.5,) * 3, (0.5,) * 3, (2, 2)),
                      len(vocab["entities"]), len(vocab["relations"]), max_boxes=4, max_length=48)
    stages = EpochStages(seed=0, shuffle_buffer=10)
    return make_loader(build_pipeline(shards, collate, batch_size, stages, num_workers=workers, **kw), workers)


def test_reader_batches_cover_the_shards(shards):
    out, m = shards
    batches = list(loader(out, workers=2))
    keys = [k for b in batches for k in b["keys"]]
    assert len(keys) == len(set(keys)) == m["samples"]
    b = batches[0]
    B = len(b["keys"])
    assert b["image"].shape == (B, 3, 64, 64) and b["box_mask"].shape == (B, 4, 4)
    assert b["box_valid"].sum(1).tolist() == [3] * B  # 3 boxes per image, padded to 4
    assert torch.allclose(b["ent_target"][b["box_valid"]].sum(-1), torch.ones(3 * B))
    assert torch.allclose(b["rel_target"].sum(-1), torch.ones(B))
    assert set(b["match"].tolist()) <= {0.0, 1.0}


def test_reader_epochs_and_resampled(shards):
    out, m = shards
    assert len(list(loader(out, batch_size=4, resampled=True, epoch_batches=5))) == 5


def test_reader_errors(shards, tmp_path):
    out, m = shards
    n = len(m["shards"])
    with pytest.raises(MmieError, match=f"{n} shards for 1 ranks x {n + 1} workers"):
        loader(out, workers=n + 1)
    with pytest.raises(DataError, match="no manifest.json"):
        read_shard_dir(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    vocab = json.loads((bad / "vocab.json").read_text())
    vocab["entities"] = vocab["entities"][:-1]
    vocab["digest"] = "something-else"
    (bad / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(DataError, match="does not match the shards"):
        read_shard_dir(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text(json.dumps({"shards": []}))
    (empty / "vocab.json").write_text("{}")
    with pytest.raises(DataError, match="lists no shards"):
        read_shard_dir(empty)


def test_corrupt_sample_inside_a_shard_is_skipped_and_counted(shards, tmp_path):
    import webdataset as wds

    out, m = shards
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    good = next(iter(wds.WebDataset(str(out / m["shards"][0]), shardshuffle=False)))
    with wds.TarWriter(str(bad / m["shards"][0])) as w:  # replace shard 0 by one good and one broken sample
        w.write({"__key__": "good", "jpg": good["jpg"], "txt": good["txt"], "json": good["json"]})
        w.write({"__key__": "broken", "jpg": b"not a jpeg", "txt": good["txt"], "json": good["json"]})
    manifest = json.loads((bad / "manifest.json").read_text())
    batches = list(loader(bad, batch_size=4))
    keys = [k for b in batches for k in b["keys"]]
    assert "good" in keys and "broken" not in keys
    assert sum(sum(b["skipped"].values()) for b in batches) == 1
    assert len(keys) == manifest["samples"] - manifest["samples_per_shard"][0] + 1


def test_malformed_top_level_file_is_one_line_error(bad_news, tmp_path, capsys):
    news, _, _ = bad_news
    broken = tmp_path / "train.json"
    broken.write_text('{"annotations": [')
    args = ["--annotations", str(broken), "--data-json", str(news / "data.json"), "--images", str(news),
            "--out", str(tmp_path / "o")]
    r = subprocess.run([sys.executable, "-m", "pretrain.prepare", *args], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {broken}: not valid JSON")
    assert len(r.stderr.strip().splitlines()) == 1


def test_box_patch_mask():
    boxes = torch.tensor([[0, 0, 64, 64], [0, 0, 32, 32], [40, 40, 44, 44]], dtype=torch.float32)
    m = box_patch_mask(boxes, 64, 64, (2, 2))
    assert m.tolist() == [[True] * 4, [True, False, False, False], [False, False, False, True]]


def test_two_ranks_read_disjoint_samples_covering_the_set(shards, tmp_path):
    out, m = shards
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(HERE / "helpers" / "read_rank_keys.py"), str(out),
           str(tmp_path / "keys")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    k0 = json.loads((tmp_path / "keys.0").read_text())
    k1 = json.loads((tmp_path / "keys.1").read_text())
    assert k0 and k1 and not set(k0) & set(k1)
    assert len(k0) + len(k1) == len(set(k0) | set(k1)) == m["samples"]
