"""Fine-tuning through the real entry point: a 2-epoch tiny run of each task, outputs, MLflow, bad inputs."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import MmieError
from finetune.mjere import build_from_mnre
from finetune.run import main as finetune_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mjere_dir(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mjere")
    build_from_mnre(synth_dir / "mnre", out)
    return out


def tiny(task, data, run_dir, mlruns, *extra):
    return ["--task", task, "--data", str(data), "--init", "none", "--run-dir", str(run_dir),
            "--tracking-uri", str(mlruns), "train.epochs=2", "data.max_train=24", "train.batch_size=8",
            "model.image_size=64", "train.patience=5", *extra]


@pytest.mark.parametrize("task,sub", [("mner", "twitter"), ("mre", "mnre"), ("mjere", None)])
def test_two_epoch_run_of_each_task(task, sub, synth_dir, mjere_dir, tmp_path):
    data = synth_dir / sub if sub else mjere_dir
    run = tmp_path / "run"
    assert finetune_main(tiny(task, data, run, tmp_path / "mlruns", "train.keep_checkpoints=true")) == 0
    m = json.loads((run / "metrics.json").read_text())
    from finetune.checkpoint import load_latest

    assert load_latest(run / "checkpoints")["epoch"] == 2  # every task's checkpoint reads back (weights_only)
    assert m["image_handling"]["test"]["posts_with_stand_in"] == 0 and m["threads"] >= 1
    assert m["missing_images"]["test"]["ok"] == m["image_handling"]["test"]["distinct_pictures"]  # counted once
    assert m["epochs"] == 2 and len(m["history"]) == 2 and 1 <= m["best_epoch"] <= 2
    for split in ("dev", "test"):
        assert {"f1", "precision", "recall"} <= set(m[split]) and 0.0 <= m[split]["f1"] <= 1.0
    assert m["missing_images"]["test"]["missing"] == 0 and m["missing_images"]["test"]["ok"] > 0
    assert all(h["train/loss"] > 0 for h in m["history"])
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    from finetune.readers import read_task

    test_uids = [ex.uid for ex in read_task(task, data)["test"].examples]
    assert [p["uid"] for p in preds] == test_uids and {"uid", "gold", "pred"} <= set(preds[0])  # every test post
    assert (run / "reports" / "test.json").is_file() and (run / "reports" / "test_f1.png").is_file()
    assert (run / "reports" / "curves.png").stat().st_size > 1000 and all("lr/encoder" in h for h in m["history"])
    assert (run / "config.yaml").is_file() and (run / "model" / "heads.safetensors").is_file()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (r,) = client.search_runs([client.get_experiment_by_name("mmie-finetune").experiment_id])
    assert r.data.params["task"] == task and r.data.params["align.alpha"] == "0.2"
    assert [x.step for x in client.get_metric_history(r.info.run_id, "dev/f1")] == [1, 2]
    assert "curves.png" in {a.path for a in client.list_artifacts(r.info.run_id)}
    if task == "mner":  # the predict CLI reads the run back
        out = subprocess.run([sys.executable, "-m", "finetune.predict", "--run", str(run), "--text",
                              "Look at Jordan today !"], capture_output=True, text=True, cwd=REPO)
        assert out.returncode == 0, out.stderr[-2000:]
        row = json.loads(out.stdout.strip().splitlines()[-1])
        assert row["tokens"] == ["Look", "at", "Jordan", "today", "!"] and isinstance(row["entities"], list)
        assert row["context"] == ""  # MNER's default: a post without its picture gets no context (mner.yaml)


def test_bad_init_and_task_data_mismatch(synth_dir, tmp_path):
    with pytest.raises(MmieError, match="does not exist"):
        finetune_main(tiny("mner", synth_dir / "twitter", tmp_path / "r", "none", "--init", "/nope/export"))
    with pytest.raises(MmieError, match="no train file"):
        finetune_main(tiny("mner", synth_dir / "mnre", tmp_path / "r", "none"))
    r = subprocess.run([sys.executable, str(REPO / "finetune" / "run.py"), *tiny(
        "mre", synth_dir / "twitter", tmp_path / "r", "none")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: ")


def test_context_file_lacking_images_is_counted(synth_dir, tmp_path):
    ctx = tmp_path / "ctx.json"
    ctx.write_text(json.dumps({"100000.jpg": "A person waves a flag."}))
    run = tmp_path / "run"
    assert finetune_main(tiny("mner", synth_dir / "twitter", run, "none", "--context", f"file:{ctx}",
                              "train.epochs=1")) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["contexts"]["train"] == {"from file": 1, "missing from file": 23}
