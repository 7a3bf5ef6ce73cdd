"""MLflow logging through common.tracking: runs started together on a new local store all land in it."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import sys
from common.tracking import make_logger
logger = make_logger(f"run{sys.argv[2]}", {"seed": sys.argv[2]}, sys.argv[1], "mmie-race")
logger.log_metrics({"dev/f1": 0.5}, step=1)
logger.close()
"""


def test_runs_started_together_on_a_new_store_all_land(tmp_path):
    store = tmp_path / "mlruns"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(store), str(i)], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), next(e for p, e in zip(procs, errors) if p.returncode)[-2000:]
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mmie-race").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"run{i}" for i in range(4)]
    assert all(r.info.status == "FINISHED" and r.data.metrics["dev/f1"] == 0.5 for r in runs)


def test_store_uris_are_told_from_local_directories():
    from common.tracking import is_store_uri, resolve_tracking_uri

    for uri in ("http://127.0.0.1:5000", "https://h", "sqlite:///x.db", "postgresql://u@h/db", "mysql://h/db",
                "databricks"):
        assert is_store_uri(uri) and resolve_tracking_uri(uri) == (uri, None)
    assert not is_store_uri("./mlruns") and not is_store_uri("/tmp/postgres-runs")
