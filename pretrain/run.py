"""Pretrain the fusion encoder.

    deepspeed --num_gpus 2 pretrain/run.py --config pretrain/configs/tiny.yaml [--run-dir DIR] [overrides]
    python pretrain/run.py --config pretrain/configs/tiny.yaml train.steps=50 data.batch_size=8
    ... --resume          continue from the latest checkpoint in the run dir (same world size)
    ... --tracking-uri U  MLflow store or server (default ./mlruns; "none" to disable)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common.config import load_config
from common.errors import cli_main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pretrain/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (pretrain/configs/*.yaml)")
    p.add_argument("--run-dir", default=None, help="default runs/<name>-<time>")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--tracking-uri", default="./mlruns")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # launcher
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4")
    a = p.parse_intermixed_args(argv)
    from pretrain.config import PretrainConfig
    from pretrain.trainer import Trainer

    cfg = load_config(PretrainConfig, a.config, a.overrides)
    run_dir = Path(a.run_dir or f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    trainer = Trainer(cfg, run_dir, a.tracking_uri, resume=a.resume)
    try:
        metrics = trainer.fit()
    except BaseException:
        trainer.close("FAILED")
        raise
    trainer.close()
    if trainer.rank == 0:
        print(f"pretraining done: {metrics['steps']} steps, {metrics['samples_seen']} samples in {metrics['wall_s']}s"
              f" ({metrics['samples_per_s']}/s); val ITM acc {metrics.get('val_itm_acc', float('nan')):.3f}, "
              f"CIT R@1 {metrics.get('val_cit_r1', float('nan')):.3f} -> export {run_dir / 'export'}")
    return 0


if __name__ == "__main__":
    cli_main(main)
