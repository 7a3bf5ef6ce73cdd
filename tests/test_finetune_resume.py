"""--resume: a fine-tuning run killed (SIGKILL) after an epoch checkpoint continues to the same result as an
uninterrupted run; damaged checkpoints are skipped (falling back to the one before) or a clear error."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.errors import ConfigError, MmieError
from finetune import checkpoint
from finetune.run import main as finetune_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def keep_threads():
    """train.threads=1 sets torch's thread count for the process: give the rest of the suite its cores back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def args(data: Path, run: Path, mlruns: Path) -> list[str]:
    # one thread: the two runs must do bit-identical arithmetic; learning rates at which dev F1 climbs every epoch
    return ["--task", "mner", "--data", str(data), "--init", "none", "--run-dir", str(run), "--tracking-uri",
            str(mlruns), "train.epochs=3", "train.patience=5", "train.batch_size=8", "model.image_size=64",
            "train.lr=1e-3", "train.encoder_lr=3e-4", "train.threads=1", "train.keep_checkpoints=true"]


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "finetune" / "run.py"), *argv], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_after(proc: subprocess.Popen, path: Path, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path.name} appeared: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < end, f"no {path} after {timeout} s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()


def assert_same_result(run: Path, reference: Path) -> None:
    m, ref = (json.loads((r / "metrics.json").read_text()) for r in (run, reference))
    assert ref["test"]["f1"] > 0 and len({h["dev/f1"] for h in ref["history"]}) > 1  # a run that learns
    for key in ("dev", "test", "best_epoch", "epochs"):
        assert m[key] == ref[key], key
    assert m["history"] == ref["history"]  # every epoch's losses and dev scores, exactly


@pytest.fixture(scope="module")
def uninterrupted(synth_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("straight")
    run = root / "run"
    n = torch.get_num_threads()
    assert finetune_main(args(synth_dir / "twitter", run, root / "mlruns")) == 0
    torch.set_num_threads(n)
    return run


def test_sigkill_after_first_epoch_then_resume_gives_the_same_result(synth_dir, uninterrupted, tmp_path):
    run, mlruns = tmp_path / "run", tmp_path / "mlruns"
    kill_after(start(args(synth_dir / "twitter", run, mlruns)), run / "checkpoints" / "epoch-1.pt")
    assert not (run / "metrics.json").exists()
    assert finetune_main(["--resume", "--run-dir", str(run), "--tracking-uri", str(mlruns)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["resumed_after_epochs"] and m["resumed_after_epochs"][0] >= 1
    assert_same_result(run, uninterrupted)
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    (r,) = client.search_runs([client.get_experiment_by_name("mmie-finetune").experiment_id])
    assert r.info.status == "FINISHED"  # the killed run's MLflow run, reopened and finished
    assert sorted({x.step for x in client.get_metric_history(r.info.run_id, "dev/f1")}) == [1, 2, 3]


def test_truncated_latest_checkpoint_falls_back_to_the_one_before(synth_dir, uninterrupted, tmp_path, capfd):
    run, mlruns = tmp_path / "run", tmp_path / "mlruns"
    kill_after(start(args(synth_dir / "twitter", run, mlruns)), run / "checkpoints" / "epoch-2.pt")
    latest = run / "checkpoints" / "epoch-2.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # as if the disk lost the end of the file
    assert finetune_main(["--resume", "--run-dir", str(run), "--tracking-uri", "none"]) == 0
    assert "skipped unreadable checkpoint epoch-2.pt" in capfd.readouterr().err
    assert json.loads((run / "metrics.json").read_text())["resumed_after_epochs"] == [1]
    assert_same_result(run, uninterrupted)


def test_checkpoint_files_are_atomic_and_damage_is_reported(tmp_path, capfd):
    ckpt = tmp_path / "checkpoints"
    weights = {"w": torch.ones(3)}

    def state(epoch: int) -> dict:
        return {"epoch": epoch, "model": weights, "optimizer": {}, "scheduler": {}, "rng": torch.get_rng_state(),
                "generator": torch.Generator().get_state(), "best": {"epoch": 1, "f1": 0.5}, "history": []}

    checkpoint.save_best(ckpt, 1, weights)
    for epoch in (1, 2, 3):
        checkpoint.save_epoch(ckpt, state(epoch))
    assert checkpoint.epochs_saved(ckpt) == [3, 2]  # the last two are kept
    assert not list(ckpt.glob(".*.tmp"))
    (ckpt / ".epoch-4.pt.123.tmp").write_bytes(b"half a checkpoint")  # a save killed midway: ignored
    assert checkpoint.load_latest(ckpt)["epoch"] == 3
    (ckpt / "epoch-3.pt").write_bytes(b"not a zip")
    assert checkpoint.load_latest(ckpt)["epoch"] == 2
    assert "epoch-3.pt" in capfd.readouterr().err
    torch.save({"epoch": 2}, ckpt / "epoch-2.pt")  # readable, but not a fine-tuning checkpoint
    with pytest.raises(MmieError, match="no readable checkpoint .*epoch-3.pt.*epoch-2.pt: not a fine-tuning"):
        checkpoint.load_latest(ckpt)
    with pytest.raises(MmieError, match="no checkpoint in"):
        checkpoint.load_latest(tmp_path / "elsewhere")
    (ckpt / "best-epoch-1.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(MmieError, match="cannot read the best-dev weights"):
        checkpoint.load_best(ckpt, 1)


def test_resume_refuses_a_different_config_and_a_finished_run(synth_dir, uninterrupted, tmp_path):
    with pytest.raises(ConfigError, match="train.lr=0.1 differs"):
        finetune_main(["--resume", "--run-dir", str(uninterrupted), "--tracking-uri", "none", "train.lr=0.1"])
    with pytest.raises(ConfigError, match="needs --run-dir"):
        finetune_main(["--resume", "--tracking-uri", "none"])
    finished = tmp_path / "finished"
    finished.mkdir()
    for name in ("config.yaml", "metrics.json"):
        (finished / name).write_bytes((uninterrupted / name).read_bytes())
    with pytest.raises(MmieError, match="has finished"):
        finetune_main(["--resume", "--run-dir", str(finished), "--tracking-uri", "none"])


def test_model_starts_the_same_with_cold_or_warm_caches(synth_dir, tmp_path, monkeypatch):
    """A cache miss builds models (the offline picture describer here) while the inputs are prepared; that must not
    move torch's global generator, or a run's first time on a dataset trains from other initial weights than
    every later run with the same seed (a resumed run, whose caches are warm, then diverged from it)."""
    from finetune.run import build_config, parse
    from finetune.trainer import FinetuneTrainer

    monkeypatch.setenv("MMIE_CACHE", str(tmp_path / "cache"))
    cfg = build_config(parse(["--task", "mner", "--data", str(synth_dir / "twitter"), "--init", "none",
                              "model.image_size=64", "data.max_train=16"]))
    starts = []
    for run in ("cold", "warm"):
        tr = FinetuneTrainer(cfg, tmp_path / run, "none", quiet=True)
        starts.append((tr.model.state_dict(), torch.get_rng_state()))
    assert any((tmp_path / "cache" / "contexts").iterdir())  # the first trainer described the pictures
    (cold, cold_rng), (warm, warm_rng) = starts
    assert torch.equal(cold_rng, warm_rng)
    assert cold.keys() == warm.keys() and all(torch.equal(cold[k], warm[k]) for k in cold)
