"""The logger protocol every stage writes metrics through: stdout and MLflow (rank 0 only).

    logger = make_logger(run_name, params, tracking_uri="./mlruns", experiment="mmie-pretrain", rank=rank)
    logger.log_metrics({"train/itm_loss": 0.6}, step=10)
    logger.log_artifact(path); logger.close()

MLflow is imported only here, when a logger is made. The default tracking URI is a local `./mlruns` store; give a
server URI (http://127.0.0.1:5000) to share one across machines.
"""
from __future__ import annotations

import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol


class Logger(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: str | Path) -> None: ...
    def close(self, status: str = "FINISHED") -> None: ...


class NullLogger:
    def log_params(self, params): pass
    def log_metrics(self, metrics, step): pass
    def log_artifact(self, path): pass
    def close(self, status="FINISHED"): pass


class StdoutLogger(NullLogger):
    def __init__(self, every: int = 1, write=print):
        self.every, self.write = every, write

    def log_metrics(self, metrics, step):
        if step % self.every == 0 or any(k.startswith(("val/", "dev/", "test/")) for k in metrics):
            self.write(f"step {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))


REMOTE_SCHEMES = ("http://", "https://", "sqlite:", "postgresql", "mysql", "mssql", "databricks")


def is_store_uri(uri: str) -> bool:
    """A tracking server or database URI (used as given), as opposed to a local directory."""
    return uri.startswith(REMOTE_SCHEMES)


def resolve_tracking_uri(uri: str) -> tuple[str, str | None]:
    """(tracking URI, artifact root). A server or database URI is used as given; a local directory (the default
    ./mlruns) becomes a SQLite store inside it, `<dir>/mlflow.db`, with artifacts under `<dir>/artifacts` — MLflow
    3 keeps its plain-file store in maintenance mode. View it with
    `mlflow ui --backend-store-uri sqlite:///<dir>/mlflow.db --host 127.0.0.1`."""
    if is_store_uri(uri):
        return uri, None
    root = Path(uri[len("file:"):] if uri.startswith("file:") else uri).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def check_tracking_uri(uri: str | None, timeout: float = 3.0) -> None:
    """Fail fast on a tracking server that does not answer: MLflow's client retries for minutes, and a run would
    only find out after its data preparation and model loading. A TCP connect with a short timeout; local stores
    and "none" pass."""
    if not uri or uri == "none" or not uri.startswith(("http://", "https://")):
        return
    import socket
    from urllib.parse import urlsplit

    from common.errors import MmieError

    parts = urlsplit(uri)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise MmieError(f"--tracking-uri {uri}: nothing answers at {host}:{port} ({e.strerror or e}); start the "
                        f"MLflow server there, or use a local store (a directory) or 'none'") from None


@contextmanager
def store_lock(uri: str):
    """Runs started together on a new SQLite store race to create its tables ("table experiments already exists");
    an exclusive lock on `<db>.lock` beside the database lets one create them while the others wait."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_experiment(client, name: str, artifact_root: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        location = f"{artifact_root}/{name}" if artifact_root else None
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


class MlflowLogger(NullLogger):
    def __init__(self, run_name: str, tracking_uri: str, experiment: str, tags: dict | None = None,
                 parent_run_id: str | None = None, run_id: str | None = None):
        """A new run, or (run_id) the existing run reopened, e.g. by a resumed training."""
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow

        self.uri, artifact_root = resolve_tracking_uri(tracking_uri)
        tags = dict(tags or {})
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        with store_lock(self.uri):  # the first use of a SQLite store creates its tables
            self.client = mlflow.MlflowClient(self.uri)
            experiment_id = ensure_experiment(self.client, experiment, artifact_root)
        self.run = None
        if run_id:
            from mlflow.exceptions import MlflowException

            try:
                self.client.update_run(run_id, status="RUNNING")
                self.run = self.client.get_run(run_id)
            except MlflowException:  # a different store: log to a new run there
                print(f"MLflow run {run_id} is not in {self.uri}; logging to a new run", file=sys.stderr)
        if self.run is None:
            self.run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        self.run_id = self.run.info.run_id

    def log_params(self, params):
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics, step):
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k.replace("@", "_at_"), float(v), now, int(step)) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and math.isfinite(float(v))]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, path):
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path))

    def close(self, status="FINISHED"):
        self.client.set_terminated(self.run_id, status=status)


class MultiLogger(NullLogger):
    def __init__(self, *loggers):
        self.loggers = loggers

    def log_params(self, params):
        for lg in self.loggers:
            lg.log_params(params)

    def log_metrics(self, metrics, step):
        for lg in self.loggers:
            lg.log_metrics(metrics, step)

    def log_artifact(self, path):
        for lg in self.loggers:
            lg.log_artifact(path)

    def close(self, status="FINISHED"):
        for lg in self.loggers:
            lg.close(status)

    @property
    def run_id(self) -> str | None:
        return next((lg.run_id for lg in self.loggers if hasattr(lg, "run_id")), None)


def make_logger(run_name: str, params: dict[str, Any], tracking_uri: str | None, experiment: str, rank: int = 0,
                stdout_every: int = 1, tags: dict | None = None, parent_run_id: str | None = None,
                write=print, run_id: str | None = None) -> MultiLogger:
    """Rank 0: stdout + MLflow (unless tracking_uri is "none"); other ranks: nothing."""
    if rank != 0:
        return MultiLogger()
    loggers: list = [StdoutLogger(stdout_every, write)]
    if tracking_uri and tracking_uri != "none":
        loggers.append(MlflowLogger(run_name, tracking_uri, experiment, tags, parent_run_id, run_id))
    logger = MultiLogger(*loggers)
    logger.log_params(params)
    return logger
