"""Learning curves: test F1 against the number of training posts, mean ± spread over seeds.

    python -m finetune.curve --task mner --data ../shared/data/twitter2015 --fractions 0.1,0.25,0.5,1 --seeds 2
    ... --out DIR           default runs/curve-<task>-<data>; one run directory per point: DIR/f<fraction>-s<seed>
    ... --subset-seed N     which random subsets (default 0)
    ... the flags and dotted overrides of finetune/run.py (--init, --config, --threads, train.epochs=3, ...)

Each fraction trains on a random subset of train (data.train_fraction, finetune/subsets.py): one permutation drawn
from --subset-seed, so the subsets are nested across fractions and every training seed of a fraction sees the same
posts (each run lists them in train_uids.txt). Everything else is the task's default configuration, epochs
included, so a small fraction also takes fewer optimizer steps. Writes DIR/curve.json, DIR/curve.md (a table with
wall times) and DIR/curve.png, and logs one MLflow parent run with every point's run nested under it (the points'
models stay in their run directories, not logged as MLflow models). A curve that
was stopped continues where it was: finished points are read back, an interrupted one resumes from its checkpoint.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common.config import flatten
from common.errors import ConfigError, cli_main
from finetune.seeds import spread

REUSE_IGNORES = ("train.threads", "train.keep_checkpoints")  # a point run with other threads is the same point


def parse_fractions(text: str) -> list[float]:
    try:
        fractions = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ConfigError(f"--fractions {text!r}: give numbers in (0, 1] separated by commas") from None
    if not fractions or not all(0.0 < f <= 1.0 for f in fractions):
        raise ConfigError(f"--fractions {text!r}: give numbers in (0, 1] separated by commas")
    return fractions


def point_config(a, fraction: float, seed: int):
    from finetune.run import build_config

    extra = [f"data.train_fraction={fraction}", f"data.subset_seed={a.subset_seed}", f"train.seed={seed}"]
    return build_config(argparse.Namespace(**{**vars(a), "overrides": list(a.overrides) + extra}))


def check_reusable(cfg, run_dir: Path) -> None:
    """A point's directory that already holds a run must hold this point's configuration."""
    from common.config import load_config
    from finetune.config import FinetuneConfig

    if not (run_dir / "config.yaml").is_file():
        return
    have, want = flatten(load_config(FinetuneConfig, run_dir / "config.yaml")), flatten(cfg)
    diff = [k for k in want if have.get(k) != want[k] and k not in REUSE_IGNORES]
    if diff:
        raise ConfigError(f"{run_dir} holds a run with {diff[0]}={have.get(diff[0])!r}, not {want[diff[0]]!r}; "
                          f"give another --out for a different curve")


def run_point(cfg, run_dir: Path, tracking_uri: str, parent_run_id: str | None) -> dict:
    """A point's metrics: read back when its run has finished, else trained (resumed from its checkpoint)."""
    from finetune.trainer import FinetuneTrainer

    if (run_dir / "metrics.json").is_file():
        return json.loads((run_dir / "metrics.json").read_text())
    trainer = FinetuneTrainer(cfg, run_dir, tracking_uri, parent_run_id=parent_run_id,
                              resume=(run_dir / "checkpoints").is_dir(), log_model=False)
    return trainer.fit_and_close()


def summarise(points: list[dict]) -> list[dict]:
    """One row per fraction: train size, seeds, dev and test F1 spread, mean wall time per run."""
    rows = []
    for f in sorted({p["fraction"] for p in points}):
        ps = [p for p in points if p["fraction"] == f]
        rows.append({"fraction": f, "n_train": ps[0]["n_train"], "seeds": [p["seed"] for p in ps],
                     "dev_f1": spread([p["dev_f1"] for p in ps]), "test_f1": spread([p["test_f1"] for p in ps]),
                     "wall_s": sum(p["wall_s"] for p in ps) / len(ps)})
    return rows


def table(rows: list[dict]) -> str:
    def pm(s):
        return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f} ({100 * s['min']:.2f}–{100 * s['max']:.2f})"

    lines = ["| fraction | train posts | seeds | dev F1 | test F1 | wall per run (mean) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['fraction']:g} | {r['n_train']} | {','.join(map(str, r['seeds']))} | {pm(r['dev_f1'])} | "
              f"{pm(r['test_f1'])} | {r['wall_s']:.0f} s |" for r in rows]
    return "\n".join(lines)


def plot(rows: list[dict], points: list[dict], title: str, path: Path) -> Path:
    from finetune.report import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    n = [r["n_train"] for r in rows]
    for split, style in (("test", "-o"), ("dev", "--s")):
        mean = [100 * r[f"{split}_f1"]["mean"] for r in rows]
        std = [100 * r[f"{split}_f1"]["std"] for r in rows]
        ax.errorbar(n, mean, yerr=std, fmt=style, capsize=3, label=f"{split} F1 (mean ± std)")
    ax.scatter([p["n_train"] for p in points], [100 * p["test_f1"] for p in points], s=10, c="k", alpha=0.4,
               label="test F1 per seed", zorder=3)
    ax.set_xscale("log")
    ax.set_xticks(n, [str(x) for x in n])
    ax.minorticks_off()
    ax.set_xlabel("training posts (log scale)")
    ax.set_ylabel("F1")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def curve(a) -> dict:
    from common.tracking import check_tracking_uri, make_logger

    check_tracking_uri(a.tracking_uri)
    fractions, seeds = parse_fractions(a.fractions), list(range(a.seeds))
    base = point_config(a, 1.0, 0)
    if not base.data.dir:
        raise ConfigError("finetune.curve: give --data DIR (or data.dir=...)")
    out = Path(a.out or f"runs/curve-{base.task}-{Path(base.data.dir).name}")
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "curve.json"
    for f in fractions:  # before anything is logged or trained
        for s in seeds:
            check_reusable(point_config(a, f, s), out / f"f{f:g}-s{s}")
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    params = {"task": base.task, "data": base.data.dir, "init": base.init, "fractions": a.fractions,
              "seeds": a.seeds, "subset_seed": a.subset_seed, "overrides": " ".join(a.overrides)}
    same = all(state.get(k) == v for k, v in params.items())  # else (e.g. more fractions) a new parent run
    logger = make_logger(f"curve-{base.task}-{Path(base.data.dir).name}", params, a.tracking_uri, base.experiment,
                         tags={"task": base.task, "curve": "true"}, run_id=state.get("mlflow_run_id") if same else None)
    parent = getattr(logger, "run_id", None)
    points, t0, total = [], time.perf_counter(), len(fractions) * len(seeds)
    try:
        for f in fractions:
            for s in seeds:
                print(f"[{len(points) + 1}/{total}] fraction {f:g}, seed {s} -> {out / f'f{f:g}-s{s}'}", flush=True)
                m = run_point(point_config(a, f, s), out / f"f{f:g}-s{s}", a.tracking_uri, parent)
                points.append({"fraction": f, "seed": s, "n_train": m["n_train"], "dev_f1": m["dev"]["f1"],
                               "test_f1": m["test"]["f1"], "wall_s": m["wall_s"], "run": str(out / f"f{f:g}-s{s}")})
                state_path.write_text(json.dumps({**params, "mlflow_run_id": parent, "points": points}, indent=1))
    except BaseException:
        logger.close("FAILED")
        raise
    rows = summarise(points)
    result = {**params, "mlflow_run_id": parent, "points": points, "rows": rows,
              "wall_s": round(time.perf_counter() - t0, 1)}
    state_path.write_text(json.dumps(result, indent=1) + "\n")
    (out / "curve.md").write_text(table(rows) + "\n")
    plot(rows, points, f"{base.task} learning curve ({Path(base.data.dir).name}, {len(seeds)} seeds)",
         out / "curve.png")
    for r in rows:
        logger.log_metrics({"curve/test_f1_mean": r["test_f1"]["mean"], "curve/test_f1_std": r["test_f1"]["std"],
                            "curve/dev_f1_mean": r["dev_f1"]["mean"]}, r["n_train"])
    for name in ("curve.json", "curve.md", "curve.png"):
        logger.log_artifact(out / name)
    logger.close()
    return result


def main(argv: list[str] | None = None) -> int:
    from finetune.run import add_config_args

    p = argparse.ArgumentParser(prog="python -m finetune.curve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--fractions", default="0.05,0.1,0.25,0.5,1", help="shares of train, comma-separated")
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1 per fraction (default 3)")
    p.add_argument("--subset-seed", type=int, default=0, help="which nested subsets (default 0)")
    p.add_argument("--out", help="default runs/curve-<task>-<data>")
    p.add_argument("--tracking-uri", default="./mlruns", help='MLflow store or server; "none" to disable')
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3")
    a = p.parse_intermixed_args(argv)
    if a.seeds < 1:
        raise ConfigError(f"--seeds {a.seeds}: give at least 1")
    r = curve(a)
    print(table(r["rows"]))
    print(f"learning curve in {Path(r['points'][0]['run']).parent} (curve.png, curve.md, curve.json)")
    return 0


if __name__ == "__main__":
    cli_main(main)
