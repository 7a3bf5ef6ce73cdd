"""A tiny fine-tuning run on synthetic data (1 epoch, 24 training examples, 64 px), for tests that need a
finished run to evaluate, view or serve."""
from pathlib import Path

from finetune.run import main as finetune_main


def tiny_run(task: str, data: Path, run: Path, mlruns: Path, *extra: str) -> Path:
    assert finetune_main(["--task", task, "--data", str(data), "--init", "none", "--run-dir", str(run),
                          "--tracking-uri", str(mlruns), "train.epochs=1", "data.max_train=24", "train.batch_size=8",
                          "model.image_size=64", *extra]) == 0
    return run
