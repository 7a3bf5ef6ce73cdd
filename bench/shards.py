"""Benchmark: pretraining input pipelines, side by side in one run (ratios; the last line is one JSON object).

1. read + decode + collate from WebDataset shards vs from a folder of JPEG + JSON files holding the same samples;
2. a data step with the teacher's soft labels precomputed in the shards vs the detector + teacher run in the loop.

    python bench/shards.py [--news 400] [--batch-size 32] [--repeats 3]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402,F401
from common.detector import build_detector  # noqa: E402
from common.synthetic import SynthConfig, generate  # noqa: E402
from common.zoo import TextEncoder  # noqa: E402
from pretrain.data import Collate, EpochStages, ImageSpec, build_pipeline, make_loader, read_shard_dir  # noqa: E402
from pretrain.prepare import parse as prepare_parse  # noqa: E402
from pretrain.prepare import prepare  # noqa: E402
from common.teacher import build_teacher  # noqa: E402


def export_folder(shard_dir: Path, out: Path) -> list[str]:
    """Write every shard sample as <key>.jpg + <key>.json (caption inside) — the layout shards replace."""
    import webdataset as wds

    shards, _, _ = read_shard_dir(shard_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = []
    for s in wds.WebDataset(shards, shardshuffle=False):
        (out / f"{s['__key__']}.jpg").write_bytes(s["jpg"])
        meta = json.loads(s["json"])
        meta["caption"] = s["txt"].decode()
        (out / f"{s['__key__']}.json").write_text(json.dumps(meta))
        keys.append(s["__key__"])
    return keys


def evict(paths) -> None:
    """Drop files from the page cache (posix_fadvise DONTNEED): the next read comes from the disk, as it would
    from cold or network storage."""
    import os

    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def time_shards(shard_dir: Path, collate: Collate, batch_size: int) -> tuple[float, int]:
    shards, _, _ = read_shard_dir(shard_dir)
    t0 = time.perf_counter()
    n = sum(len(b["keys"]) for b in make_loader(build_pipeline(shards, collate, batch_size, EpochStages(0, 64))))
    return time.perf_counter() - t0, n


def time_folder(folder: Path, keys: list[str], collate: Collate, batch_size: int) -> tuple[float, int]:
    from PIL import Image

    t0 = time.perf_counter()
    n = 0
    for i in range(0, len(keys), batch_size):
        samples = []
        for k in keys[i:i + batch_size]:
            meta = json.loads((folder / f"{k}.json").read_text())
            img = Image.open(io.BytesIO((folder / f"{k}.jpg").read_bytes()))
            img.load()
            samples.append({"__key__": k, "jpg": img, "txt": meta["caption"], "json": meta})
        n += len(collate(samples)["keys"])
    return time.perf_counter() - t0, n


def time_precomputed(shard_dir: Path, collate: Collate, batch_size: int, max_batches: int) -> tuple[float, int]:
    shards, _, _ = read_shard_dir(shard_dir)
    t0 = time.perf_counter()
    n = 0
    for b, batch in enumerate(make_loader(build_pipeline(shards, collate, batch_size, EpochStages(0, 64)))):
        if b >= max_batches:
            break
        n += len(batch["keys"])
    return time.perf_counter() - t0, n


def time_teacher_in_loop(shard_dir: Path, collate: Collate, batch_size: int, teacher, detector,
                         max_batches: int) -> tuple[float, int]:
    """The same data step, but boxes and soft labels computed per batch (what precomputing avoids)."""
    from pretrain.units import Labeller

    shards, _, vocab = read_shard_dir(shard_dir)
    labeller = Labeller(teacher, detector, vocab, top_k=5)
    t0 = time.perf_counter()
    n = 0
    for b, batch in enumerate(make_loader(build_pipeline(shards, collate, batch_size, EpochStages(0, 64)))):
        if b >= max_batches:
            break
        # in the loop nothing is cached across steps: each batch's images are labelled again (the prompt
        # embeddings stay precomputed, to be generous)
        images = {Path(k): img for k, img in zip(batch["keys"], batch["_pil"])}
        labeller.label(images)
        n += len(batch["keys"])
    return time.perf_counter() - t0, n


class KeepPil(Collate):
    def __call__(self, samples):
        out = super().__call__(samples)
        out["_pil"] = [s["jpg"] for s in samples]
        return out


def read_times(tmp: Path, keys, collate, batch_size: int, repeats: int, samples: int) -> tuple[dict, int]:
    """Best read+decode+collate time of the shards and of the folder, warm and cold page cache; and the count."""
    os.sync()
    shard_files = sorted((tmp / "shards").glob("shard-*.tar"))
    folder_files = sorted((tmp / "folder").iterdir())
    times: dict[str, list[float]] = {"warm_shards": [], "warm_folder": [], "cold_shards": [], "cold_folder": []}
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits both alike
        for temp in ("warm", "cold"):
            if temp == "cold":
                evict(shard_files)
            t, n = time_shards(tmp / "shards", collate, batch_size)
            times[f"{temp}_shards"].append(t)
            if temp == "cold":
                evict(folder_files)
            t, n_f = time_folder(tmp / "folder", keys, collate, batch_size)
            times[f"{temp}_folder"].append(t)
            assert n == n_f == samples
    return {k: min(v) for k, v in times.items()}, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--news", type=int, default=400, help="synthetic VisualNews items (x2 pairs; 80%% train)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--teacher-batches", type=int, default=4)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(SynthConfig(seed=0, news=a.news, twitter=3, mnre=3, image_size=128), tmp / "data")
        news = tmp / "data" / "newsclippings"
        args = prepare_parse([
            "--annotations", str(news / "annotations" / "train.json"), "--data-json", str(news / "data.json"),
            "--images", str(news), "--out", str(tmp / "shards"), "--entities", "100", "--max-boxes", "4",
            "--teacher-size", "128", "--shard-size", "200"])
        manifest = prepare(args)
        keys = export_folder(tmp / "shards", tmp / "folder")
        _, _, vocab = read_shard_dir(tmp / "shards")
        tok = TextEncoder("minilm-l6").tokenizer
        spec = ImageSpec(224, (0.5,) * 3, (0.5,) * 3, (7, 7))
        collate = Collate(tok, spec, len(vocab["entities"]), len(vocab["relations"]), max_boxes=8, max_length=48)
        best, n = read_times(tmp, keys, collate, a.batch_size, a.repeats, manifest["samples"])
        teacher = build_teacher("label-bridge", image_size=128)
        detector = build_detector("crops", max_boxes=4)
        keep = KeepPil(tok, spec, len(vocab["entities"]), len(vocab["relations"]), max_boxes=8, max_length=48)
        t_pre, n_pre = time_precomputed(tmp / "shards", keep, a.batch_size, a.teacher_batches)
        t_loop, n_loop = time_teacher_in_loop(tmp / "shards", keep, a.batch_size, teacher, detector,
                                              a.teacher_batches)
    result = {
        "samples": n, "batch_size": a.batch_size,
        **{f"{k}_samples_per_s": round(n / v, 1) for k, v in best.items()},
        "shards_vs_folder_warm_cache": round(best["warm_folder"] / best["warm_shards"], 2),
        "shards_vs_folder_cold_cache": round(best["cold_folder"] / best["cold_shards"], 2),
        "precomputed_samples_per_s": round(n_pre / t_pre, 1),
        "teacher_in_loop_samples_per_s": round(n_loop / t_loop, 1),
        "precomputed_vs_in_loop": round((t_loop / n_loop) / (t_pre / n_pre), 2),
    }
    for temp in ("warm", "cold"):
        print(f"read+decode+collate, {temp} page cache: shards {result[f'{temp}_shards_samples_per_s']}/s vs folder "
              f"{result[f'{temp}_folder_samples_per_s']}/s -> {result[f'shards_vs_folder_{temp}_cache']}x")
    print(f"data step: labels precomputed {result['precomputed_samples_per_s']}/s vs teacher in the loop "
          f"{result['teacher_in_loop_samples_per_s']}/s -> {result['precomputed_vs_in_loop']}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
