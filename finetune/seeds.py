"""python -m finetune.seeds RUN_DIR [RUN_DIR ...] [--versus RUN_DIR ...] [--json out.json] — mean and spread over
seeds, and (with --versus) whether one group beats another.

Groups finished fine-tuning runs by their resolved configuration with the seed left out, and prints one Markdown
row per group: seeds, dev F1 and test F1 as mean ± sample standard deviation (with min–max), test precision and
recall, the entity F1 beside the triple F1 (MJERE), the per-type test F1 means and the mean wall time. Reads each
run's config.yaml and metrics.json; a directory without them is named in a clear error.

With --versus, the runs before it form group A and those after it group B (each must be one configuration), and
it prints the difference of mean test (and dev) F1, A − B, with a 95% bootstrap interval (10,000 resamples):
paired over seeds when both groups ran the same seeds (the difference per seed is resampled), else each group
resampled on its own. With three seeds an interval is wide; it says how much the seeds allow one to claim."""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common.config import flatten, load_config
from common.errors import MmieError, cli_main
from finetune.config import FinetuneConfig

VARIES = ("train.seed", "name", "train.threads", "train.keep_checkpoints")  # left out of the grouping key: they
# do not change what a run computes (threads change only float rounding)


def load_run(run: Path) -> tuple[dict, dict]:
    for name in ("config.yaml", "metrics.json"):
        if not (run / name).is_file():
            raise MmieError(f"{run}: no {name} — not a finished fine-tuning run")
    cfg = flatten(load_config(FinetuneConfig, run / "config.yaml"))  # checked, with defaults for older runs
    return cfg, json.loads((run / "metrics.json").read_text())


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def summarise(runs: list[Path]) -> list[dict]:
    groups: dict[str, dict] = {}
    for run in runs:
        cfg, m = load_run(run)
        key = json.dumps({k: v for k, v in sorted(cfg.items()) if k not in VARIES})
        g = groups.setdefault(key, {"task": cfg["task"], "data": cfg["data.dir"], "init": cfg["init"], "runs": []})
        g["runs"].append({"run": str(run), "seed": cfg["train.seed"], "dev": m["dev"]["f1"], "test": m["test"]["f1"],
                          "precision": m["test"].get("precision"), "recall": m["test"].get("recall"),
                          "entity": m["test"].get("entity", {}).get("f1"),
                          "per_type": {t: v["f1"] for t, v in m["test"].get("per_type", {}).items()},
                          "epochs": m["epochs"], "best_epoch": m["best_epoch"], "wall_s": m["wall_s"]})
    out = []
    for key, g in groups.items():
        rs = g.pop("runs")
        types = sorted({t for r in rs for t in r["per_type"]})
        extra = {k: spread([r[k] for r in rs]) for k in ("precision", "recall", "entity")
                 if all(r[k] is not None for r in rs)}
        out.append({**g, "config": json.loads(key), "seeds": [r["seed"] for r in rs],
                    "dev_f1": spread([r["dev"] for r in rs]), "test_f1": spread([r["test"] for r in rs]),
                    **{f"test_{k}": v for k, v in extra.items()},
                    "per_type_test_f1": {t: statistics.fmean(r["per_type"].get(t, 0.0) for r in rs) for t in types},
                    "wall_s": statistics.fmean(r["wall_s"] for r in rs), "runs": rs})
    return out


def _pm(s: dict) -> str:
    return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f} ({100 * s['min']:.2f}–{100 * s['max']:.2f})"


def _mean(g: dict, key: str) -> str:
    return f"{100 * g[key]['mean']:.2f}" if key in g else "-"


def table(groups: list[dict]) -> str:
    lines = ["| task | data | init | seeds | dev F1 | test F1 | test P / R | entity F1 | per-type test F1 "
             "| wall (mean) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups:
        types = ", ".join(f"{t} {100 * v:.1f}" for t, v in g["per_type_test_f1"].items())
        entity = _pm(g["test_entity"]) if "test_entity" in g else "-"
        lines.append(f"| {g['task']} | {Path(g['data']).name} | {Path(g['init']).name} | "
                     f"{','.join(map(str, g['seeds']))} | {_pm(g['dev_f1'])} | {_pm(g['test_f1'])} | "
                     f"{_mean(g, 'test_precision')} / {_mean(g, 'test_recall')} | {entity} | {types or '-'} | "
                     f"{g['wall_s']:.0f} s |")
    return "\n".join(lines)


def bootstrap_difference(a: dict[int, float], b: dict[int, float], n: int = 10_000, seed: int = 0) -> dict:
    """Mean(a) − mean(b) with a 95% percentile bootstrap interval; a, b: seed -> value. Paired (the per-seed
    differences resampled) when both hold the same seeds, else the two groups resampled independently."""
    import random

    rng = random.Random(seed)
    paired = sorted(a) == sorted(b) and len(a) > 1
    if paired:
        diffs = [a[s] - b[s] for s in sorted(a)]
        stats = sorted(statistics.fmean(rng.choices(diffs, k=len(diffs))) for _ in range(n))
    else:
        va, vb = list(a.values()), list(b.values())
        stats = sorted(statistics.fmean(rng.choices(va, k=len(va))) - statistics.fmean(rng.choices(vb, k=len(vb)))
                       for _ in range(n))
    return {"diff": statistics.fmean(a.values()) - statistics.fmean(b.values()), "low": stats[int(0.025 * n)],
            "high": stats[int(0.975 * n) - 1], "paired": paired, "n_a": len(a), "n_b": len(b)}


def compare(a_runs: list[Path], b_runs: list[Path]) -> dict:
    """Group A against group B (one configuration each): the differences of mean test and dev F1."""
    (a,), (b,) = (one_group(runs, name) for runs, name in ((a_runs, "A"), (b_runs, "B")))
    out = {"a": a, "b": b}
    for split in ("test", "dev"):
        out[split] = bootstrap_difference({r["seed"]: r[split] for r in a["runs"]},
                                          {r["seed"]: r[split] for r in b["runs"]})
    return out


def one_group(runs: list[Path], name: str) -> list[dict]:
    groups = summarise(runs)
    if len(groups) != 1:
        raise MmieError(f"group {name}: its {len(runs)} runs hold {len(groups)} configurations; compare one "
                        f"configuration (its seeds) against another")
    if len({r["seed"] for r in groups[0]["runs"]}) != len(groups[0]["runs"]):
        raise MmieError(f"group {name}: a seed appears twice")
    return groups


def comparison_text(c: dict) -> str:
    lines = []
    for split in ("test", "dev"):
        d = c[split]
        how = "paired over seeds" if d["paired"] else f"unpaired, {d['n_a']} vs {d['n_b']} runs"
        lines.append(f"{split} F1, A − B: {100 * d['diff']:+.2f} (95% bootstrap interval {100 * d['low']:+.2f} to "
                     f"{100 * d['high']:+.2f}; {how})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--versus", nargs="+", type=Path, help="group B: compare the runs before it (A) with these")
    p.add_argument("--json", type=Path, help="also write the groups (and the comparison), with every run, to this file")
    a = p.parse_args(argv)
    if a.versus:
        c = compare(a.runs, a.versus)
        print(table([c["a"], c["b"]]))
        print(comparison_text(c))
        result: object = c
    else:
        result = summarise(a.runs)
        print(table(result))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    cli_main(main)
