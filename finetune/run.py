"""Fine-tune for multimodal NER, relation extraction or joint extraction.

    python finetune/run.py --init runs/demo/pretrain/export --task mner --data ../shared/data/twitter2015
    python finetune/run.py --init none --task mre --data DIR --config finetune/configs/mre.yaml train.epochs=3
    python finetune/run.py --resume --run-dir RUN      continue a killed run from its last epoch checkpoint
    ... --config FILE       default finetune/configs/<task>.yaml (per-task epochs and patience over default.yaml)
    ... --images DIR        image root (default <data>/images when present)
    ... --run-dir DIR       default runs/<name>-<task>-<time>
    ... --threads N         torch threads (default: every core)
    ... --tracking-uri U    MLflow store or server (default ./mlruns; "none" to disable)
    ... --no-mlflow-model   do not log the trained model as an MLflow pyfunc model (finetune/mlflow_model.py)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common.config import load_config
from common.errors import cli_main


def add_config_args(p: argparse.ArgumentParser) -> None:
    """The flags that are shorthands for config fields (build_config reads them); shared with finetune.curve."""
    p.add_argument("--config", default=None, help="default: finetune/configs/<task>.yaml")
    p.add_argument("--task", choices=["mner", "mre", "mjere"])
    p.add_argument("--data", help="dataset directory in the real layout")
    p.add_argument("--init", help="pretraining export directory, or none")
    p.add_argument("--images", help="image root")
    p.add_argument("--context", help="offline | none | file:<json>")
    p.add_argument("--image", choices=["on", "none"], help="none: text-only ablation")
    p.add_argument("--align", choices=["shapley", "infonce", "none"])
    p.add_argument("--threads", type=int, help="torch threads (default: every core; = train.threads)")


def parse(argv):
    p = argparse.ArgumentParser(prog="finetune/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--run-dir", default=None)
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint, "
                   "with its saved config.yaml")
    p.add_argument("--tracking-uri", default="./mlruns")
    p.add_argument("--no-mlflow-model", action="store_true", help="do not log the trained model to MLflow as a "
                   "pyfunc model (it stays in RUN/model/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3 align.alpha=0.2")
    return p.parse_intermixed_args(argv)


def build_config(a):
    from finetune.config import FinetuneConfig, task_config_path

    flags = {"task": a.task, "data.dir": a.data, "init": a.init, "data.images": a.images,
             "data.context": a.context, "data.image": a.image, "align.method": a.align,
             "train.threads": a.threads}
    overrides = [f"{k}={v!r}" for k, v in flags.items() if v is not None] + list(a.overrides)
    return load_config(FinetuneConfig, a.config or task_config_path(a.task), overrides)


def resume_config(a):
    """The run's saved config.yaml; flags or overrides given beside --resume must agree with it (--threads may
    differ: it changes speed, not the run)."""
    from common.config import differing_keys, flatten
    from common.errors import ConfigError
    from finetune.config import FinetuneConfig

    if not a.run_dir:
        raise ConfigError("--resume needs --run-dir RUN (the run to continue)")
    saved = Path(a.run_dir) / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"--resume: {saved} does not exist (not a fine-tuning run directory)")
    cfg = load_config(FinetuneConfig, saved)
    asked, have = flatten(build_config(argparse.Namespace(**{**vars(a), "config": a.config or saved}))), flatten(cfg)
    diff = differing_keys(have, asked, ignore=("train.threads",))
    if diff:
        raise ConfigError(f"--resume: {diff[0]}={asked.get(diff[0])!r} differs from the run's {diff[0]}="
                          f"{have[diff[0]]!r} ({saved}); a resumed run keeps its config")
    if a.threads is not None:
        cfg.train.threads = a.threads
    return cfg


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    cfg = resume_config(a) if a.resume else build_config(a)
    from finetune.trainer import FinetuneTrainer

    if not cfg.data.dir:
        raise SystemExit("finetune/run.py: give --data DIR (or data.dir=...)")
    run_dir = Path(a.run_dir or f"runs/{cfg.name}-{cfg.task}-{time.strftime('%Y%m%d-%H%M%S')}")
    trainer = FinetuneTrainer(cfg, run_dir, a.tracking_uri, resume=a.resume, log_model=not a.no_mlflow_model)
    result = trainer.fit_and_close()
    d, t = result["dev"], result["test"]
    print(f"{cfg.task} on {cfg.data.dir}: best dev F1 {100 * d['f1']:.2f} (epoch {result['best_epoch']}), test F1 "
          f"{100 * t['f1']:.2f} (P {100 * t['precision']:.2f} R {100 * t['recall']:.2f}) in {result['wall_s']}s; "
          f"images {result['missing_images']['test']} -> {run_dir}")
    return 0


if __name__ == "__main__":
    cli_main(main)
