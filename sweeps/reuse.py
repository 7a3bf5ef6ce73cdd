"""A finished fine-tuning run counted as a sweep trial (`sweeps/tune.py --reuse RUN`), instead of training the same
setting again: the run must have been trained exactly as the sweep trains its trials, but for the swept keys."""
from __future__ import annotations

import json
from pathlib import Path

from common.config import differing_keys, flatten, load_config
from common.errors import ConfigError
from sweeps.space import METRIC

PATH_KEYS = ("init", "data.dir", "data.images")  # compared as absolute paths (relative to where both ran)
IGNORED = ("experiment", "train.threads")  # where it is tracked; threads change speed, not the run


def _absolute(flat: dict) -> dict:
    return {k: (str(Path(v).expanduser().resolve()) if k in PATH_KEYS and v not in ("", "none") else v)
            for k, v in flat.items()}


def reused_row(run: str | Path, config: str | Path, overrides: list[str], space: dict) -> dict:
    """The results-table row of the finished run in `run`, after checking that its saved config.yaml equals the
    sweep's (`config` with `overrides`) at the run's own values of the swept keys."""
    from finetune.config import FinetuneConfig

    run = Path(run)
    saved, metrics_path = run / "config.yaml", run / "metrics.json"
    for path in (saved, metrics_path):
        if not path.is_file():
            raise ConfigError(f"--reuse {run}: {path} does not exist (not a finished fine-tuning run)")
    have = flatten(load_config(FinetuneConfig, saved))
    unknown = [k for k in space if k not in have]
    if unknown:
        raise ConfigError(f"--reuse {run}: swept key {unknown[0]} is not in {saved}")
    at_run = [f"{k}={have[k]!r}" for k in space]
    asked = _absolute(flatten(load_config(FinetuneConfig, config, overrides + at_run)))
    have = _absolute(have)
    diff = differing_keys(have, asked, IGNORED)
    if diff:
        raise ConfigError(f"--reuse {run}: {diff[0]}={have.get(diff[0])!r} in {saved}, but the sweep trains with "
                          f"{diff[0]}={asked.get(diff[0])!r}; a reused run must be trained as the trials are")
    try:
        m = json.loads(metrics_path.read_text())
        return {METRIC: float(m["dev"]["f1"]), "epochs": int(m["epochs"]), "test_f1": float(m["test"]["f1"]),
                "stopped_early": False, **{f"config/{k}": have[k] for k in space},
                "trial_id": f"reused:{run.name}", "mlflow_run_id": m.get("mlflow_run_id"), "node_id": None}
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"--reuse {run}: {metrics_path} is not a finished run's metrics (no dev/test F1 or epochs: {e!r})") from None


def covers(reused: list[dict], values: dict) -> bool:
    """Whether a reused run's row already has these values of the swept keys."""
    return any(all(row[f"config/{k}"] == v for k, v in values.items()) for row in reused)
