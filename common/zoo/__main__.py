"""python -m common.zoo [--text NAME] [--vision SPEC ...] [--image PATH] [--report FILE]

Loads the zoo offline and shows what it loaded, with a sanity check of each real model."""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from common.errors import cli_main
from common.zoo import TextEncoder, build_vision_encoder, load_spacy


def sample_photo() -> Path:
    """A real photograph that ships with matplotlib (Grace Hopper in uniform)."""
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def check_text(name: str) -> dict:
    enc = TextEncoder(name)
    e = enc.embed(["cat", "kitten", "stocks"])
    return {"name": name, "path": str(enc.path), "dim": enc.dim,
            "params": sum(p.numel() for p in enc.parameters()),
            "cos(cat,kitten)": round(float(e[0] @ e[1]), 4), "cos(cat,stocks)": round(float(e[0] @ e[2]), 4)}


@torch.no_grad()
def check_vision(spec: str, image: Path) -> dict:
    from PIL import Image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = build_vision_encoder(spec).eval()
    x = enc.preprocess(Image.open(image))[None]
    out = enc(x)
    info = enc.describe() | {"patches": list(out["patches"].shape), "pooled": list(out["pooled"].shape),
                             "warnings": [str(w.message) for w in caught]}
    if hasattr(enc, "classify"):
        probs = enc.classify(x).softmax(-1)[0]
        top = probs.topk(3)
        info["top3"] = [[enc.categories[i], round(float(p), 3)] for p, i in zip(top.values, top.indices)]
    return info


def check_spacy(name: str) -> dict:
    nlp = load_spacy(name)
    doc = nlp("Jordan visited the new stadium in Phoenix yesterday.")
    return {"name": f"{nlp.meta.get('lang')}_{nlp.meta.get('name')}", "version": nlp.meta.get("version"),
            "pipes": nlp.pipe_names, "pos": [[t.text, t.pos_] for t in doc]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.zoo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", default="minilm-l6")
    p.add_argument("--vision", nargs="+", default=["efficientnet-lite0", "clip:ViT-B-32", "patch:32:384"])
    p.add_argument("--spacy", default="auto")
    p.add_argument("--image", type=Path, default=None, help="photo to classify (default: matplotlib's sample)")
    p.add_argument("--report", type=Path, default=None, help="write the report as JSON here")
    a = p.parse_args(argv)
    image = a.image or sample_photo()
    t0 = time.perf_counter()
    report = {"text": check_text(a.text), "vision": [check_vision(s, image) for s in a.vision],
              "spacy": check_spacy(a.spacy), "image": str(image)}
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    t = report["text"]
    print(f"text    {t['name']:<22} dim {t['dim']:<5} {t['params'] / 1e6:5.1f}M params  "
          f"cos(cat,kitten)={t['cos(cat,kitten)']:.3f} > cos(cat,stocks)={t['cos(cat,stocks)']:.3f}")
    for v in report["vision"]:
        extra = f"top-3 on {image.name}: " + ", ".join(f"{c} {p:.2f}" for c, p in v["top3"]) if "top3" in v else ""
        extra += " [random init]" if v["warnings"] else ""
        print(f"vision  {v['name']:<22} dim {v['dim']:<5} {v['params'] / 1e6:5.1f}M params  grid "
              f"{v['grid'][0]}x{v['grid'][1]} @ {v['image_size']}px  {extra}")
    s = report["spacy"]
    print(f"spaCy   {s['name']} {s['version']}  pipes {','.join(s['pipes'])}  POS: "
          + " ".join(f"{w}/{pos}" for w, pos in s["pos"][:6]))
    if a.report:
        a.report.parent.mkdir(parents=True, exist_ok=True)
        a.report.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    cli_main(main)
