"""Fine-tune for multimodal NER, relation extraction or joint extraction.

    python finetune/run.py --init runs/demo/pretrain/export --task mner --data ../shared/data/twitter2015
    python finetune/run.py --init none --task mre --data DIR --config finetune/configs/default.yaml train.epochs=3
    ... --images DIR        image root (default <data>/images when present)
    ... --run-dir DIR       default runs/<name>-<task>-<time>
    ... --tracking-uri U    MLflow store or server (default ./mlruns; "none" to disable)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common.config import load_config
from common.errors import cli_main

DEFAULT_CONFIG = Path(__file__).with_name("configs") / "default.yaml"


def parse(argv):
    p = argparse.ArgumentParser(prog="finetune/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--task", choices=["mner", "mre", "mjere"])
    p.add_argument("--data", help="dataset directory in the real layout")
    p.add_argument("--init", help="pretraining export directory, or none")
    p.add_argument("--images", help="image root")
    p.add_argument("--context", help="offline | none | file:<json>")
    p.add_argument("--image", choices=["on", "none"], help="none: text-only ablation")
    p.add_argument("--align", choices=["shapley", "infonce", "none"])
    p.add_argument("--run-dir", default=None)
    p.add_argument("--tracking-uri", default="./mlruns")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3 align.alpha=0.2")
    return p.parse_intermixed_args(argv)


def build_config(a):
    from finetune.config import FinetuneConfig

    flags = {"task": a.task, "data.dir": a.data, "init": a.init, "data.images": a.images,
             "data.context": a.context, "data.image": a.image, "align.method": a.align}
    overrides = [f"{k}={v!r}" for k, v in flags.items() if v is not None] + list(a.overrides)
    return load_config(FinetuneConfig, a.config, overrides)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    cfg = build_config(a)
    from finetune.trainer import FinetuneTrainer

    if not cfg.data.dir:
        raise SystemExit("finetune/run.py: give --data DIR (or data.dir=...)")
    run_dir = Path(a.run_dir or f"runs/{cfg.name}-{cfg.task}-{time.strftime('%Y%m%d-%H%M%S')}")
    trainer = FinetuneTrainer(cfg, run_dir, a.tracking_uri)
    try:
        result = trainer.fit()
    except BaseException:
        trainer.close("FAILED")
        raise
    trainer.close()
    d, t = result["dev"], result["test"]
    print(f"{cfg.task} on {cfg.data.dir}: best dev F1 {100 * d['f1']:.2f} (epoch {result['best_epoch']}), test F1 "
          f"{100 * t['f1']:.2f} (P {100 * t['precision']:.2f} R {100 * t['recall']:.2f}) in {result['wall_s']}s; "
          f"images {result['missing_images']['test']} -> {run_dir}")
    return 0


if __name__ == "__main__":
    cli_main(main)
