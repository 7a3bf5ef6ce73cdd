"""Ray Tune over the fine-tuning hyper-parameters (α, β, K by default), ASHA on dev F1, one MLflow run per trial
nested under a parent sweep run. Trials call the same FinetuneTrainer the CLI uses."""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from common.config import flatten, load_config
from common.errors import MmieError
from sweeps.space import METRIC

DEFAULT_SPACE = Path(__file__).with_name("spaces") / "default.yaml"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sweeps/tune.py", description=__doc__)
    p.add_argument("--task", required=True, choices=["mner", "mre", "mjere"])
    p.add_argument("--data", required=True, help="dataset directory (absolute under ray submit)")
    p.add_argument("--init", default="none", help="pretraining export, or none")
    p.add_argument("--config", default=None, help="default: finetune/configs/<task>.yaml")
    p.add_argument("--space", default=str(DEFAULT_SPACE))
    p.add_argument("--samples", type=int, default=6, help="trials to train (per grid point, for grid spaces); "
                   "--reuse runs come on top")
    p.add_argument("--epochs", type=int, default=2, help="max epochs per trial (ASHA's max_t)")
    p.add_argument("--grace", type=int, default=1, help="ASHA grace period in epochs")
    p.add_argument("--start", choices=["config", "random"], default="config",
                   help="config: the first trial takes the config's own values of the swept keys (one of the "
                        "samples), so the sweep always tries the plain run's setting; random: every trial is drawn "
                        "(a space with grid keys is always drawn)")
    p.add_argument("--reuse", action="append", default=[], metavar="RUN",
                   help="a finished fine-tuning run dir trained as the trials are (same config but the swept keys, "
                        "same epochs), counted as a trial instead of being trained again (repeatable); one at the "
                        "config's own values stands in for --start config's first trial")
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--gpus-per-trial", type=float, default=0)
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    p.add_argument("--address", default=None, help="Ray address (auto under ray submit; default: local)")
    p.add_argument("--name", default=None, help="experiment name (default sweep-<task>-<time>)")
    p.add_argument("--storage", default="runs/sweeps", help="where Ray keeps trials (shared path on a cluster)")
    p.add_argument("--tracking-uri", default="./mlruns", help="MLflow store/server (a server on multi-node)")
    p.add_argument("--experiment", default="mmie-sweep")
    p.add_argument("--max-failures", type=int, default=1, help="retries of a failed trial")
    p.add_argument("--resume", action="store_true", help="continue the named experiment in --storage")
    p.add_argument("--inject-failure", action="store_true",
                   help="make the first attempt of the first trial raise (checks retries end to end)")
    p.add_argument("overrides", nargs="*", help="fixed dotted overrides for every trial")
    return p


def run_trial(params: dict, base: dict) -> None:
    """One trial: a fine-tuning run with the trial's overrides, reporting dev F1 every epoch."""
    import ray
    import torch
    from ray import tune

    from finetune.config import FinetuneConfig
    from finetune.trainer import FinetuneTrainer

    torch.set_num_threads(max(1, int(base["cpus"])))
    ctx = tune.get_context()
    trial_dir = Path(ctx.get_trial_dir())
    if base["inject_failure"] and ctx.get_trial_id().endswith("00000"):
        marker = trial_dir / "injected-failure"
        if not marker.exists():
            marker.write_text("first attempt failed on purpose\n")
            raise RuntimeError("injected failure (first attempt of the first trial)")
    overrides = base["overrides"] + [f"{k}={v!r}" for k, v in params.items()]
    cfg = load_config(FinetuneConfig, base["config"], overrides)
    trainer = FinetuneTrainer(cfg, trial_dir / "run", base["tracking_uri"], parent_run_id=base["parent_run_id"],
                              quiet=True, log_model=False)
    run_id, node = trainer.logger.run_id, ray.get_runtime_context().get_node_id()
    trainer.logger.log_params({"ray_node_id": node})  # which Ray node ran the trial (a cluster: many)

    def report(epoch: int, metrics: dict) -> None:
        if epoch == cfg.train.epochs:  # the last epoch comes with the final report: ASHA stops a trial at max_t, so
            return  # reporting it here would end the trial before its test F1
        tune.report({METRIC: metrics["dev/f1"], "epoch": epoch, "train_loss": metrics["train/loss"],
                     "mlflow_run_id": run_id, "node_id": node})

    trainer.report_fn = report
    try:
        result = trainer.fit()
    except SystemExit:  # Ray stops a trial (ASHA) by exiting its thread from inside report()
        trainer.close("KILLED")
        raise
    except BaseException:
        trainer.close("FAILED")
        raise
    trainer.close()
    tune.report({METRIC: result["dev"]["f1"], "epoch": result["epochs"], "test_f1": result["test"]["f1"],
                 "mlflow_run_id": run_id, "node_id": node, "finished": 1})


def results_table(grid, keys: list[str], reused: list[dict] = ()):
    """One row per trial: its best dev F1, the epochs it ran, test F1 (finished trials), its config; then the
    `reused` runs' rows (sweeps/reuse.py); best first."""
    import pandas as pd

    rows = []
    for r in grid:
        hist = r.metrics_dataframe
        if hist is None or METRIC not in hist:
            continue
        last = hist.iloc[-1]
        finished = "finished" in hist and pd.notna(last.get("finished"))
        rows.append({METRIC: float(hist[METRIC].max()), "epochs": int(hist["epoch"].max()),
                     "test_f1": float(last["test_f1"]) if finished else float("nan"),
                     "stopped_early": not finished,
                     **{f"config/{k}": r.config.get(k) for k in keys},
                     "trial_id": last.get("trial_id"), "mlflow_run_id": last.get("mlflow_run_id"),
                     "node_id": last.get("node_id")})
    rows += list(reused)
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(METRIC, ascending=False).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_intermixed_args(argv)
    import ray

    from common.tracking import MlflowLogger, is_store_uri
    from finetune.config import FinetuneConfig, task_config_path
    from sweeps.reuse import covers, reused_row
    from sweeps.space import load_space

    a.config = str(Path(a.config or task_config_path(a.task)).resolve())
    space = load_space(a.space)
    absolute = lambda p: str(Path(p).expanduser().resolve())  # noqa: E731  (trials run in their own dirs)
    base_overrides = [f"task={a.task!r}", f"data.dir={absolute(a.data)!r}",
                      f"init={a.init if a.init == 'none' else absolute(a.init)!r}",
                      f"train.epochs={a.epochs}", f"experiment={a.experiment!r}"] + list(a.overrides)
    values = flatten(load_config(FinetuneConfig, a.config, base_overrides))  # fails fast on a bad override
    start = {k: values[k] for k in space} if a.start == "config" else None
    reused = [reused_row(run, a.config, base_overrides, space) for run in a.reuse]
    if start and covers(reused, start):
        print("--start config: a reused run already has the config's own values; every trial is drawn")
        start = None
    name = a.name or f"sweep-{a.task}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = Path(absolute(a.storage))
    tracking = a.tracking_uri if is_store_uri(a.tracking_uri) or a.tracking_uri == "none" else \
        absolute(a.tracking_uri)
    parent = None
    if tracking != "none":
        parent = MlflowLogger(name, tracking, a.experiment, tags={"sweep": name, "task": a.task})
        parent.log_params({"task": a.task, "data": a.data, "init": a.init, "samples": a.samples,
                           "epochs": a.epochs, "space": Path(a.space).name, **{f"space.{k}": str(v)
                                                                               for k, v in space.items()},
                           **({"reused": ", ".join(r["trial_id"] for r in reused)} if reused else {})})
    base = {"config": absolute(a.config), "overrides": base_overrides, "tracking_uri": tracking,
            "parent_run_id": parent.run_id if parent else None, "cpus": a.cpus_per_trial,
            "inject_failure": a.inject_failure}
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    ray.init(address=a.address, num_cpus=a.num_cpus if a.address is None else None, include_dashboard=False,
             configure_logging=False, log_to_driver=False)
    status = "FINISHED"
    try:
        grid = make_tuner(a, space, base, name, storage, start).fit()
        report(grid, space, storage / name, name, parent, reused)
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if parent:
            parent.close(status)
        ray.shutdown()
    return 0


def make_tuner(a, space: dict, base: dict, name: str, storage: Path, start: dict | None = None):
    """A new Tuner (ASHA on dev F1 over `space`; `start`: the values of the first trial, unless the space has grid
    keys), or the named experiment restored from `storage` (--resume)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    trainable = tune.with_resources(tune.with_parameters(run_trial, base=base),
                                    {"cpu": a.cpus_per_trial, "gpu": a.gpus_per_trial})
    if a.resume:
        path = storage / name
        if not tune.Tuner.can_restore(str(path)):
            raise MmieError(f"--resume: no experiment to restore at {path}")
        return tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    run_config = tune.RunConfig(name=name, storage_path=str(storage), verbose=1,
                                failure_config=tune.FailureConfig(max_failures=a.max_failures))
    scheduler = ASHAScheduler(max_t=a.epochs, grace_period=min(a.grace, a.epochs), reduction_factor=2,
                              time_attr="epoch")
    grid = any(isinstance(v, dict) and "grid_search" in v for v in space.values())
    search = BasicVariantGenerator(points_to_evaluate=[start] if start and not grid else None)
    return tune.Tuner(trainable, param_space=space, run_config=run_config,
                      tune_config=tune.TuneConfig(metric=METRIC, mode="max", num_samples=a.samples,
                                                  scheduler=scheduler, search_alg=search))


def report(grid, space: dict, out: Path, name: str, parent, reused: list[dict] = ()) -> None:
    """results.csv, best.json and plots in `out` (the trials and the `reused` runs' rows); the table on stdout; the
    best dev F1 and the files on the parent MLflow run, whose stopped children are closed."""
    from sweeps.plots import plot_sweep

    table = results_table(grid, list(space), reused)
    if table.empty:
        raise MmieError(f"{name}: no trial reported {METRIC} ({len(grid.errors)} errors)")
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv", index=False)
    plots = plot_sweep(table, out)
    best = table.iloc[0].to_dict()
    summary = {"name": name, "trials": len(grid) + len(reused), "reused": len(reused),
               "errored_trials": len(grid.errors),
               "best": {k.replace("config/", ""): v for k, v in best.items()}, "storage": str(out),
               "mlflow_parent_run": parent.run_id if parent else None}
    (out / "best.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    shown = table.drop(columns=["mlflow_run_id"])
    print(shown.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"best of {summary['trials']} trials ({len(grid.errors)} errored after retries"
          + (f"; {len(reused)} of them reused" if reused else "") + "): "
          + ", ".join(f"{k}={v}" for k, v in summary["best"].items() if k in space or k == METRIC))
    if parent:
        parent.log_metrics({"best_dev_f1": float(best[METRIC])}, 0)
        for p in [out / "results.csv", out / "best.json", *plots]:
            parent.log_artifact(p)
        close_stopped_runs(parent, table)


def close_stopped_runs(parent, table) -> None:
    """A trial killed without the chance to close its MLflow run is marked KILLED, not left RUNNING (a reused run
    is left as it is: it may live in another store)."""
    for trial, run_id in zip(table["trial_id"], table["mlflow_run_id"]):
        if isinstance(run_id, str) and run_id and not str(trial).startswith("reused:"):
            run = parent.client.get_run(run_id)
            if run.info.status == "RUNNING":
                parent.client.set_terminated(run_id, status="KILLED")
