"""Sweeps: a 4-trial Ray Tune run with ASHA on a local Ray (2 CPUs, loopback only), tracked in MLflow, with one
injected trial failure that is retried."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


def ray_env(tmp_path: Path) -> dict:
    """HOME with an empty ray_bootstrap_config.yaml keeps Ray's dashboard from probing cloud metadata."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "ray_bootstrap_config.yaml").write_text("{}\n")
    from common.offline import cache_dir

    return dict(os.environ, HOME=str(home), MMIE_CACHE=str(cache_dir()), RAY_USAGE_STATS_ENABLED="0",
                RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled", PYTHONPATH=str(REPO))


TINY = ["data.max_train=16", "train.batch_size=8", "model.image_size=64", "model.fusion_layers=1",
        "train.eval_batch_size=32"]


@pytest.fixture(scope="module")
def finished_run(synth_dir, tmp_path_factory) -> Path:
    """A tiny fine-tuning run trained as the sweep below trains its trials (2 epochs), at alpha 0.5."""
    from finetune.run import main as finetune_main

    run = tmp_path_factory.mktemp("reused") / "alpha05"
    assert finetune_main(["--task", "mner", "--data", str(synth_dir / "twitter"), "--init", "none", "--run-dir",
                          str(run), "--tracking-uri", "none", "--threads", "1", "train.epochs=2", "align.alpha=0.5",
                          *TINY]) == 0
    return run


def test_a_reused_run_must_be_trained_as_the_trials_are(synth_dir, finished_run, tmp_path):
    from common.errors import ConfigError
    from finetune.config import task_config_path
    from sweeps.reuse import covers, reused_row
    from sweeps.space import load_space

    space = load_space(REPO / "sweeps" / "spaces" / "default.yaml")
    base = ["task='mner'", f"data.dir={str(synth_dir / 'twitter')!r}", "init='none'", "train.epochs=2",
            "experiment='mmie-sweep'", *TINY]
    metrics = json.loads((finished_run / "metrics.json").read_text())
    row = reused_row(finished_run, task_config_path("mner"), base, space)
    assert row["dev_f1"] == metrics["dev"]["f1"] and row["test_f1"] == metrics["test"]["f1"]
    assert (row["config/align.alpha"], row["config/align.beta"], row["config/align.k"]) == (0.5, 0.2, 3)
    assert row["trial_id"] == "reused:alpha05" and row["epochs"] == metrics["epochs"]
    assert covers([row], {"align.alpha": 0.5, "align.beta": 0.2, "align.k": 3})
    assert not covers([row], {"align.alpha": 0.2, "align.beta": 0.2, "align.k": 3})
    with pytest.raises(ConfigError, match=r"train\.epochs=2 in .*config\.yaml, but the sweep trains with "
                                          r"train\.epochs=3"):
        reused_row(finished_run, task_config_path("mner"), [*base, "train.epochs=3"], space)
    with pytest.raises(ConfigError, match=r"does not exist \(not a finished fine-tuning run\)"):
        reused_row(finished_run / "model", task_config_path("mner"), base, space)
    import shutil

    cut = tmp_path / "cut-off"
    cut.mkdir()
    shutil.copy(finished_run / "config.yaml", cut / "config.yaml")
    (cut / "metrics.json").write_text('{"dev": {"f1": 0.5')  # a run killed while writing its metrics
    with pytest.raises(ConfigError, match=r"cut-off/metrics\.json is not a finished run's metrics"):
        reused_row(cut, task_config_path("mner"), base, space)


def test_four_trial_sweep_with_asha_mlflow_and_a_retried_failure(synth_dir, finished_run, tmp_path):
    storage, mlruns = tmp_path / "sweeps", tmp_path / "mlruns"
    cmd = [sys.executable, str(REPO / "sweeps" / "tune.py"), "--task", "mner", "--data", str(synth_dir / "twitter"),
           "--samples", "4", "--epochs", "2", "--num-cpus", "2", "--storage", str(storage), "--tracking-uri",
           str(mlruns), "--name", "t", "--inject-failure", "--reuse", str(finished_run), *TINY]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ray_env(tmp_path), timeout=900, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "best of 5 trials (0 errored after retries; 1 of them reused)" in r.stdout
    best = json.loads((storage / "t" / "best.json").read_text())
    assert {"align.alpha", "align.beta", "align.k", "dev_f1"} <= set(best["best"])
    assert best["trials"] == 5 and best["reused"] == 1
    import pandas as pd

    table = pd.read_csv(storage / "t" / "results.csv")
    (reused,) = table[table["trial_id"] == "reused:alpha05"].itertuples()
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert reused.dev_f1 == pytest.approx(metrics["dev"]["f1"]) and reused.epochs == metrics["epochs"]
    assert (storage / "t" / "results.csv").is_file() and (storage / "t" / "alpha_beta.png").is_file()
    assert (storage / "t" / "k_curve.png").is_file()
    failed_once = list((storage / "t").glob("*/injected-failure"))
    assert len(failed_once) == 1  # the first attempt of one trial raised; its retry finished
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mmie-sweep")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [x for x in runs if "mlflow.parentRunId" not in x.data.tags]
    trials = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 4 and parent.info.status == "FINISHED"
    start = [t for t in trials if (t.data.params["align.alpha"], t.data.params["align.beta"],
                                   t.data.params["align.k"]) == ("0.2", "0.2", "3")]
    assert len(start) == 1  # --start config (the default): one trial runs the config's own alpha, beta, K
    for t in trials:
        assert {"align.alpha", "align.beta", "align.k"} <= set(t.data.params)
        history = client.get_metric_history(t.info.run_id, "dev/f1")
        assert 1 <= len(history) <= 2 and t.info.status in ("FINISHED", "KILLED")
    assert "best_dev_f1" in parent.data.metrics and parent.data.params["reused"] == "reused:alpha05"
