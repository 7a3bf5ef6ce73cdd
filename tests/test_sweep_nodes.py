"""A sweep across two Ray nodes (both on this machine, one CPU each, loopback only) with an explicit shared
storage path: trials run on both nodes and each has its MLflow run, nested under the sweep's."""
import subprocess
import sys

import pandas as pd

from tests.test_sweep import REPO, TINY, ray_env


def test_a_sweep_spreads_its_trials_over_two_nodes(synth_dir, tmp_path):
    storage, mlruns = tmp_path / "shared" / "sweeps", tmp_path / "mlruns"
    cmd = [sys.executable, str(REPO / "tests" / "helpers" / "sweep_on_two_ray_nodes.py"), "--task", "mner",
           "--data", str(synth_dir / "twitter"), "--samples", "2", "--epochs", "1", "--cpus-per-trial", "1",
           "--storage", str(storage), "--tracking-uri", str(mlruns), "--name", "t", *TINY]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ray_env(tmp_path), timeout=900, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    table = pd.read_csv(storage / "t" / "results.csv")
    assert len(table) == 2 and table["node_id"].nunique() == 2  # one CPU per node: one trial on each
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mmie-sweep").experiment_id])
    (parent,) = [x for x in runs if "mlflow.parentRunId" not in x.data.tags]
    trials = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(t.info.run_id for t in trials) == sorted(table["mlflow_run_id"])
    assert {t.data.params["ray_node_id"] for t in trials} == set(table["node_id"])
