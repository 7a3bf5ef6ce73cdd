"""Benchmark: what a prediction costs on this CPU. Model load time, single-post latency (p50 / p95 over --posts
posts, one call per post, as a server answers requests) and batched posts/s (all posts in one call), for the
default model with a picture, the default model without one (the grey stand-in) and the text-only model
(data.image=none); then where a single post's time goes (cProfile, cumulative seconds per stage). Last line: one
JSON object

    {"load_s": …, "variants": {"image": {"p50_ms": …, "p95_ms": …, "batched_posts_per_s": …}, "stand_in": {…},
     "text_only": {…}}, "stages_ms_per_post": {…}, "threads": …, "weights": …}

    python bench/predict.py [--run RUN] [--posts 100] [--threads 0] [--data ../shared/data] [--compare imm ...]

Posts are Twitter-2015 test tweets ($MMIE_DATA); the picture is a 640x480 JPEG written once (Twitter-2015 ships
none). The predictor runs as the MLflow server runs it (persist=False, an empty $MMIE_CACHE): every call tags its
words with spaCy and describes its picture afresh. Without --run the default MNER configuration is built
untrained and saved and loaded the way a run's model is: latency does not depend on the weights' values. With
--run, that run's model.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import common  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]
# stage -> the function whose cumulative time it is (module path fragment, function name)
STAGES = {"pos_tags": ("finetune/pos.py", "tag"), "context": ("finetune/context.py", "describe"),
          "image_decode": ("finetune/images.py", "open"), "image_preprocess": ("common/zoo/vision.py", "preprocess"),
          "features": ("finetune/batches.py", "build_features"), "model": ("finetune/batches.py", "predict_features")}


def default_model_dir(tmp: Path, image: str, config: str = "mner") -> Path:
    """The MNER model of configs/<config>.yaml (default: the default MNER model), untrained, saved like a run's
    model/ directory."""
    from common.config import load_config
    from finetune.labels import task_classes
    from finetune.config import CONFIG_DIR, FinetuneConfig
    from finetune.model import Extractor
    from finetune.checkpoint import load_encoder, save_model_dir

    cfg = load_config(FinetuneConfig, CONFIG_DIR / f"{config}.yaml", ["task=mner", f"data.image={image!r}"])
    encoder = load_encoder(cfg)
    classes = task_classes("mner", [])
    out = tmp / f"model-{config}-{image}"
    save_model_dir(Extractor(encoder, cfg, classes), encoder, cfg, classes, out)
    return out


def tweets(data: Path, n: int) -> list[str]:
    from finetune.readers import READERS, find_split_file

    reader, names = READERS["mner"]
    split = reader(find_split_file(data / "twitter2015", "test", names), "test")
    return [" ".join(ex.tokens) for ex in split.examples[:n]]


def picture(tmp: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 640, dtype=np.float32)[None, :, None] * np.ones((480, 1, 3), np.float32)
    pixels = np.clip(base + rng.normal(0, 30, (480, 640, 3)), 0, 255).astype(np.uint8)
    path = tmp / "photo.jpg"
    Image.fromarray(pixels).save(path, "JPEG", quality=90)
    return path


def latency(predictor, posts: list[dict]) -> dict:
    predictor.predict(posts[:2])  # warm-up
    times = []
    for post in posts:
        t0 = time.perf_counter()
        predictor.predict([post])
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    predictor.predict(posts)
    batched = time.perf_counter() - t0
    q = statistics.quantiles(times, n=20)
    return {"p50_ms": round(1000 * statistics.median(times), 1), "p95_ms": round(1000 * q[18], 1),
            "mean_ms": round(1000 * statistics.fmean(times), 1),
            "batched_posts_per_s": round(len(posts) / batched, 1), "posts": len(posts)}


def stages(predictor, posts: list[dict]) -> dict:
    prof = cProfile.Profile()
    prof.enable()
    for post in posts:
        predictor.predict([post])
    prof.disable()
    stats = pstats.Stats(prof).stats
    out = {}
    for stage, (file, fn) in STAGES.items():
        cum = sum(v[3] for (f, _, name), v in stats.items() if name == fn and f.endswith(file))
        out[stage] = round(1000 * cum / len(posts), 2)
    total = sum(v[3] for (f, _, name), v in stats.items() if name == "predict" and f.endswith("predict.py"))
    out["total"] = round(1000 * total / len(posts), 2)
    return out


def compared(tmp: Path, config: str, posts: list[dict], default: dict) -> dict:
    """latency() of configs/<config>.yaml's model (untrained) with the picture, and its ratios to the default's."""
    from finetune.checkpoint import load_model_dir
    from finetune.predict import Predictor

    v = latency(Predictor(*load_model_dir(default_model_dir(tmp, "on", config)), persist=False), posts)
    v["p50_vs_default"] = round(v["p50_ms"] / default["p50_ms"], 2)
    v["posts_per_s_vs_default"] = round(v["batched_posts_per_s"] / default["batched_posts_per_s"], 2)
    return v


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/predict.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="a trained run (default: the default MNER model, untrained)")
    p.add_argument("--posts", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: every core)")
    p.add_argument("--data", default=os.environ.get("MMIE_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--compare", nargs="*", default=[], metavar="CONFIG",
                   help="also time these finetune/configs/<CONFIG>.yaml models with the picture (e.g. imm mgipscl), "
                        "as variants config:<CONFIG> with their p50 and posts/s relative to the default's")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from finetune.predict import Predictor
    from finetune.checkpoint import load_model_dir

    data = Path(a.data)
    if not (data / "twitter2015").is_dir():
        raise SystemExit(f"bench/predict.py: {data / 'twitter2015'} not found (give --data DIR or set MMIE_DATA)")
    texts = tweets(data, a.posts)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["MMIE_CACHE"] = str(tmp / "cache")  # new posts: no POS tags or picture descriptions cached
        photo = picture(tmp)
        dirs = {"on": Path(a.run) / "model" if a.run else default_model_dir(tmp, "on")}
        dirs["none"] = default_model_dir(tmp, "none") if not a.run else dirs["on"]
        t0 = time.perf_counter()
        model, cfg = load_model_dir(dirs["on"])
        load_s = time.perf_counter() - t0
        on = Predictor(model, cfg, persist=False)  # as the server runs it: nothing cached across calls
        with_image = [{"text": t, "image": str(photo)} for t in texts]
        without = [{"text": t} for t in texts]
        variants = {"image": latency(on, with_image), "stand_in": latency(on, without)}
        if not a.run:
            variants["text_only"] = latency(Predictor(*load_model_dir(dirs["none"]), persist=False), without)
        for name in a.compare:
            variants[f"config:{name}"] = compared(tmp, name, with_image, variants["image"])
        parts = stages(on, with_image[: min(50, len(with_image))])
    result = {"load_s": round(load_s, 2), "variants": variants, "stages_ms_per_post": parts,
              "threads": torch.get_num_threads(), "weights": str(a.run) if a.run else "default config, untrained",
              "model": f"{cfg.model.text} + {cfg.model.vision} at {cfg.model.image_size} px, "
                       f"{cfg.model.fusion_layers} fusion layers"}
    for name, v in variants.items():
        print(f"{name:15s} p50 {v['p50_ms']:7.1f} ms  p95 {v['p95_ms']:7.1f} ms  "
              f"batched {v['batched_posts_per_s']:6.1f} "
              f"posts/s", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
