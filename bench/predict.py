"""Benchmark: what a prediction costs on this CPU. Model load time, single-post latency (p50 / p95 over --posts
posts, one call per post, as a server answers requests) and batched posts/s (all posts in one call), for the
default model with a picture, the default model without one (the grey stand-in) and the text-only model
(data.image=none); then where a single post's time goes (cProfile, cumulative seconds per stage), and the
picture's parts both ways side by side (full-size vs reduced-scale JPEG decoding; EfficientNet-Lite0 in eval mode
vs its inference copy). Last line: one JSON object

    {"load_s": …, "variants": {"image": {"p50_ms": …, "p95_ms": …, "batched_posts_per_s": …}, "stand_in": {…},
     "text_only": {…}}, "stages_ms_per_post": {…}, "picture_parts_ms": {…}, "threads": …, "weights": …}

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
from timing import median_ms  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# stage -> the function whose cumulative time it is (module path fragment, function name)
STAGES = {"pos_tags": ("finetune/pos.py", "tag"), "spacy_entities": ("finetune/pos.py", "entities"),
          "context": ("finetune/context.py", "describe"), "retrieval": ("finetune/retrieval.py", "contexts"),
          "image_decode": ("finetune/images.py", "open"),
          "image_preprocess": ("common/zoo/vision.py", "preprocess"),
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


@torch.no_grad()
def picture_parts(tmp: Path, model_size: int) -> dict:
    """The picture's path, each part both ways side by side (median ms of 30): decoding the JPEG at full size or
    at a reduced scale (ImageStore.decode_size) and resizing it for the context classifier (224 px) and the model
    (model_size), for the bench's 640 x 480 picture and a 1600 x 1200 one; EfficientNet-Lite0 in eval mode or as
    its inference copy (VisionEncoder.for_inference) at both sizes."""
    import numpy as np
    from PIL import Image

    from common.zoo import build_vision_encoder
    from finetune.images import ImageStore

    out: dict = {}
    classifier, encoder = (build_vision_encoder("efficientnet-lite0", n).eval() for n in (224, model_size))
    rng = np.random.default_rng(1)
    for w, h in ((640, 480), (1600, 1200)):
        pixels = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
        Image.fromarray(np.clip(pixels + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)).save(
            tmp / f"{w}x{h}.jpg", "JPEG", quality=90)
        for label, size in (("full", 0), ("reduced", max(224, model_size))):
            def decode():
                img, _ = ImageStore(tmp, decode_size=size).open(f"{w}x{h}.jpg")
                return classifier.preprocess(img), encoder.preprocess(img)
            out[f"decode_resize_{w}x{h}_{label}"] = median_ms(decode)
    for name, net, fn in (("classifier_224", classifier, "classify"), (f"encoder_{model_size}", encoder, "forward")):
        x = net.preprocess(Image.open(tmp / "640x480.jpg"))[None]
        fast = net.for_inference()
        for _ in range(2):  # interleaved, so a drift of the machine's speed hits both
            for label, m in (("eval", net), ("for_inference", fast)):
                out.setdefault(f"{name}_{label}", []).append(median_ms(lambda: getattr(m, fn)(x)))
    return {k: min(v) if isinstance(v, list) else v for k, v in out.items()}


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
        pic_parts = picture_parts(tmp, cfg.model.image_size) if cfg.model.vision == "efficientnet-lite0" else {}
    result = {"load_s": round(load_s, 2), "variants": variants, "stages_ms_per_post": parts,
              "picture_parts_ms": pic_parts,
              "threads": torch.get_num_threads(), "weights": str(a.run) if a.run else "default config, untrained",
              "model": f"{cfg.model.text} + {cfg.model.vision} at {cfg.model.image_size} px, "
                       f"{cfg.model.fusion_layers} fusion layers"}
    for name, v in variants.items():
        print(f"{name:15s} p50 {v['p50_ms']:7.1f} ms  p95 {v['p95_ms']:7.1f} ms  "
              f"batched {v['batched_posts_per_s']:6.1f} "
              f"posts/s", file=sys.stderr)
    for name, ms in pic_parts.items():
        print(f"{name:35s} {ms:7.2f} ms", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
