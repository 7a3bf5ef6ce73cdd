"""Benchmark: pretrain.prepare's throughput by backend on this machine. Writes a synthetic NewsCLIPpings corpus
once, then prepares it with `--backend inline` and `--backend process --workers W`, alternating, `--repeats`
times each (so drift on a shared machine hits both alike), and reports the best pairs/s of each, their ratio,
the label / write phase times, and whether the outputs were byte-identical. Last line: one JSON object

    {"pairs": …, "inline": {"pairs_per_s": …, "label_s": …, "write_s": …, "wall_s": …}, "process": {…},
     "ratio": …, "identical": true, "workers": …, "threads": …}

    python bench/prepare.py [--news 300] [--workers 2] [--repeats 2] [--teacher-size 224] [--max-boxes 6]

wall_s is the whole command: reading the annotations, the spaCy entity vocabulary and loading the models in the
driver are the same for both backends; the process pool also spawns its workers, each loading the models once.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402,F401


def digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.iterdir()):
        if p.name != "stats.json":
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--news", type=int, default=300, help="VisualNews items (2 pairs each)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--teacher-size", type=int, default=224)
    ap.add_argument("--max-boxes", type=int, default=6)
    a = ap.parse_args(argv)
    from common.synthetic import SynthConfig, generate
    from pretrain.prepare import parse, prepare

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(SynthConfig(seed=0, news=a.news, twitter=3, mnre=3), tmp / "data")
        news = tmp / "data" / "newsclippings"
        base = ["--annotations", str(news / "annotations" / "train.json"), "--data-json", str(news / "data.json"),
                "--images", str(news), "--teacher-size", str(a.teacher_size), "--max-boxes", str(a.max_boxes)]
        best: dict[str, dict] = {}
        digests, pairs = {}, 0
        for _ in range(a.repeats):
            for backend in ("inline", "process"):
                out = tmp / backend
                m = prepare(parse([*base, "--out", str(out), "--backend", backend, "--workers", str(a.workers)]))
                s, pairs = m["stats"], m["pairs_in"]
                if backend not in best or s["pairs_per_s"] > best[backend]["pairs_per_s"]:
                    best[backend] = {k: s[k] for k in ("pairs_per_s", "label_s", "write_s", "wall_s")}
                digests[backend] = digest(out)
                print(f"{backend}: {s['pairs_per_s']} pairs/s (label {s['label_s']} s, write {s['write_s']} s, "
                      f"whole {s['wall_s']} s)", flush=True)
    result = {"pairs": pairs, **best, "ratio": round(best["process"]["pairs_per_s"] / best["inline"]["pairs_per_s"], 2),
              "label_ratio": round(best["inline"]["label_s"] / max(best["process"]["label_s"], 1e-9), 2),
              "identical": digests["inline"] == digests["process"], "workers": a.workers, "threads": 1}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
