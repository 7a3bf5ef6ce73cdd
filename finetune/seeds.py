"""python -m finetune.seeds RUN_DIR [RUN_DIR ...] [--json out.json] — mean and spread over seeds.

Groups finished fine-tuning runs by their resolved configuration with the seed left out, and prints one Markdown
row per group: seeds, dev F1 and test F1 as mean ± sample standard deviation (with min–max), the per-type test F1
means (MNER) and the mean wall time. Reads each run's config.yaml and metrics.json; a directory without them is
named in a clear error."""
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
                          "per_type": {t: v["f1"] for t, v in m["test"].get("per_type", {}).items()},
                          "epochs": m["epochs"], "best_epoch": m["best_epoch"], "wall_s": m["wall_s"]})
    out = []
    for key, g in groups.items():
        rs = g.pop("runs")
        types = sorted({t for r in rs for t in r["per_type"]})
        out.append({**g, "config": json.loads(key), "seeds": [r["seed"] for r in rs],
                    "dev_f1": spread([r["dev"] for r in rs]), "test_f1": spread([r["test"] for r in rs]),
                    "per_type_test_f1": {t: statistics.fmean(r["per_type"].get(t, 0.0) for r in rs) for t in types},
                    "wall_s": statistics.fmean(r["wall_s"] for r in rs), "runs": rs})
    return out


def _pm(s: dict) -> str:
    return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f} ({100 * s['min']:.2f}–{100 * s['max']:.2f})"


def table(groups: list[dict]) -> str:
    lines = ["| task | data | init | seeds | dev F1 | test F1 | per-type test F1 | wall (mean) |",
             "|---|---|---|---|---|---|---|---|"]
    for g in groups:
        types = ", ".join(f"{t} {100 * v:.1f}" for t, v in g["per_type_test_f1"].items())
        lines.append(f"| {g['task']} | {Path(g['data']).name} | {Path(g['init']).name} | "
                     f"{','.join(map(str, g['seeds']))} | {_pm(g['dev_f1'])} | {_pm(g['test_f1'])} | {types or '-'} | "
                     f"{g['wall_s']:.0f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--json", type=Path, help="also write the groups, with every run, to this file")
    a = p.parse_args(argv)
    groups = summarise(a.runs)
    print(table(groups))
    if a.json:
        a.json.write_text(json.dumps(groups, indent=1) + "\n")


if __name__ == "__main__":
    cli_main(main)
