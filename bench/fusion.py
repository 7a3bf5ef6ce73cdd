"""Benchmark: the training step of each fusion (finetune/fusions/) relative to `none`, side by side in one run, on
the same real batches. Variants: every registered `fusion.kind` on the task's default config (so only the module
after the encoder differs), and the papers' recipes (configs/mgipscl.yaml, configs/imm.yaml), which also change
the encoder side (no joint fusion layers; IMM: raw-patch vision at 224 px instead of EfficientNet-Lite0 at 128).
A step is forward + backward + clipping + AdamW (FinetuneTrainer.train_step); the figure is the best of --steps
after one warm-up. Last line: one JSON object

    {"task": "mner", "threads": …, "variants": {"none": {"step_s": …, "ratio": 1.0, "fusion_params_m": …, …},
     "adaptive": {…}, "imm": {…}, "mgi": {…}, "recipe:mgipscl": {…}, "recipe:imm": {…}}}

    python bench/fusion.py [--task mner] [--data ../shared/data] [--steps 5] [--threads 0]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import common  # noqa: E402,F401
from timing import best_of  # noqa: E402
from finetune.fusions import FUSIONS  # noqa: E402
from finetune.run import build_config, parse  # noqa: E402
from finetune.trainer import FinetuneTrainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATASETS = {"mner": "twitter2015", "mre": "mnre"}
RECIPES = {"recipe:mgipscl": "mgipscl.yaml", "recipe:imm": "imm.yaml"}


def variant_args(name: str, task: str) -> list[str]:
    if name in RECIPES:
        return ["--config", str(REPO / "finetune" / "configs" / RECIPES[name]), "--task", task]
    return ["--task", task, f"fusion.kind={name}"]


def step_time(name: str, task: str, data: Path, steps: int, tmp: Path) -> dict:
    args = parse([*variant_args(name, task), "--data", str(data), "--run-dir", str(tmp / name), "--tracking-uri",
                  "none", "data.max_train=64", "align.sw_weight=0"])  # SW's teacher signal is precomputed, not stepped
    torch.manual_seed(0)
    tr = FinetuneTrainer(build_config(args), tmp / name, None, quiet=True)
    tr.model.train()
    opt, sched = tr.optimizer(10 * (steps + 1))
    gen = torch.Generator().manual_seed(0)
    batch = tr._batch(tr.data["train"], list(range(tr.cfg.train.batch_size)))
    seconds = best_of(lambda: tr.train_step(batch, opt, sched, gen), steps)
    params = sum(p.numel() for p in tr.model.fusion.parameters())
    return {"step_s": round(seconds, 4), "fusion_params_m": round(params / 1e6, 2),
            "vision": f"{tr.cfg.model.vision} at {tr.cfg.model.image_size} px",
            "fusion_layers": tr.cfg.model.fusion_layers,
            "batch_size": len(batch["input_ids"]), "tokens": tuple(batch["input_ids"].shape)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="mner", choices=list(DATASETS))
    p.add_argument("--data", default=os.environ.get("MMIE_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    data = Path(a.data) / DATASETS[a.task]
    if not data.is_dir():
        raise SystemExit(f"bench/fusion.py: {data} not found (give --data DIR or set MMIE_DATA)")
    if a.threads:
        torch.set_num_threads(a.threads)
    names = ["none", *sorted(k for k in FUSIONS if k != "none"), *RECIPES]
    variants = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            variants[name] = step_time(name, a.task, data, a.steps, Path(tmp))
            print(f"{name:16s} step {variants[name]['step_s'] * 1000:8.1f} ms", file=sys.stderr, flush=True)
    base = variants["none"]["step_s"]
    for v in variants.values():
        v["ratio"] = round(v["step_s"] / base, 2)
    print(json.dumps({"task": a.task, "threads": torch.get_num_threads(), "variants": variants}))


if __name__ == "__main__":
    main()
