"""Benchmark: the label-bridge teacher's image pass over many pictures, as one batch and in chunks, one thread:
wall, user and sys time and minor page faults per pass, and whether the embeddings match the one-batch pass.
Chunks alternate (each `--repeats` times) so drift hits them alike. Last line: one JSON object

    {"pictures": …, "size": …, "chunks": {"192": {"wall_s": …, "user_s": …, "sys_s": …, "minor_faults": …,
     "max_abs_diff": …}, …}}

    python bench/teacher_chunks.py [--pictures 192] [--chunks 192 32 8 4 2] [--repeats 2]

Why: a forward over hundreds of 224 px pictures allocates activations of hundreds of MB, each above glibc's mmap
threshold, so each pass faults its memory in afresh; EfficientNetLite0.CLASSIFY_CHUNK is chosen from this.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import common  # noqa: E402,F401
from common.teacher import LabelBridgeTeacher  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pictures", type=int, default=192)
    ap.add_argument("--chunks", type=int, nargs="+", default=[192, 32, 8, 4, 2])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", type=int, default=224, help="the teacher's image size")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    teacher = LabelBridgeTeacher(a.size)
    vision = teacher.vision
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)) for _ in range(a.pictures)]
    teacher.embed_images(pictures[:8])  # warm-up

    def one_pass(chunk: int):
        vision.CLASSIFY_CHUNK = chunk  # the instance's chunk, shadowing the class default
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        emb = teacher.embed_images(pictures)
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        return emb, {"wall_s": wall, "user_s": r1.ru_utime - r0.ru_utime, "sys_s": r1.ru_stime - r0.ru_stime,
                     "minor_faults": r1.ru_minflt - r0.ru_minflt}

    reference, _ = one_pass(a.pictures)
    best: dict[int, dict] = {}
    for _ in range(a.repeats):
        for chunk in a.chunks:
            emb, r = one_pass(chunk)
            r["max_abs_diff"] = float((emb - reference).abs().max())
            print(f"chunk {chunk}: wall {r['wall_s']:.2f} s, user {r['user_s']:.2f} s, sys {r['sys_s']:.2f} s, "
                  f"{r['minor_faults']} minor faults, max |diff| {r['max_abs_diff']:.1e}", flush=True)
            if chunk not in best or r["wall_s"] < best[chunk]["wall_s"]:
                best[chunk] = {k: round(v, 2) if isinstance(v, float) and k != "max_abs_diff" else v
                               for k, v in r.items()}
    print(json.dumps({"pictures": a.pictures, "size": a.size, "chunks": {str(c): best[c] for c in a.chunks}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
