"""python -m common.summary RUN_DIR — print what a demo run produced, from the JSON files it wrote."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.errors import MmieError, cli_main
from common.steps import read_steps, wall_seconds


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def summarise(run: Path) -> list[str]:
    if not run.is_dir():
        raise MmieError(f"run directory {run} does not exist (run `make demo` first)")
    lines = [f"mmie demo summary — {run}"]
    stats = _load(run / "data" / "stats.json")
    if stats:
        news = sum(s["pairs"] for s in stats["newsclippings"].values())
        tweets = sum(s["tweets"] for s in stats["twitter"].values())
        mnre = sum(s["lines"] for s in stats["mnre"].values())
        tw, mn = stats["twitter"]["test"], stats["mnre"]["test"]
        lines.append(f"  data      {run / 'data'}: {news} NewsCLIPpings pairs, {tweets} tweets, {mnre} MNRE lines "
                     f"(seed {stats['config']['seed']})")
        lines.append(f"            text-only ceiling (test): MNER typing {tw['text_only_ceiling']:.3f}, "
                     f"MNRE {mn['text_only_ceiling']:.3f} — the image is needed above these")
    zoo = _load(run / "zoo.json")
    if zoo:
        t = zoo["text"]
        lines.append(f"  zoo       text {t['name']} (dim {t['dim']}); vision "
                     + ", ".join(f"{v['name']}{' [random init]' if v['warnings'] else ''}" for v in zoo["vision"])
                     + f"; spaCy {zoo['spacy']['name']}")
        for v in zoo["vision"]:
            if "top3" in v:
                lines.append(f"            {v['name']} on {Path(zoo['image']).name}: {v['top3'][0][0]} "
                             f"({v['top3'][0][1]:.2f})")
    shards = _load(run / "shards" / "train" / "manifest.json")
    if shards:
        skipped = sum(shards["skipped"].values())
        lines.append(f"  shards    {run / 'shards'}: {shards['samples']} train samples in "
                     f"{len(shards['shards'])} shards (teacher {shards['teacher']}, detector {shards['detector']}; "
                     f"{skipped} skipped)")
    return _later_stages(run, lines)


def _later_stages(run: Path, lines: list[str]) -> list[str]:
    """summarise's lines for pretraining, fine-tuning and the sweep."""
    nan = float("nan")
    pre = _load(run / "pretrain" / "metrics.json")
    if pre:
        lines.append(f"  pretrain  {pre['steps']} steps x {pre['world_size']} ranks (ZeRO-{pre['zero_stage']}), "
                     f"{pre['samples_per_s']} samples/s; held-out ITM acc {pre.get('val_itm_acc', nan):.3f}, "
                     f"CIT R@1 {pre.get('val_cit_r1', nan):.3f} (chance {pre.get('val_cit_r1_chance', nan):.3f})"
                     + (f", MLM acc {pre['val_mlm_acc']:.3f}" if "val_mlm_acc" in pre else "")
                     + f" -> {run / 'pretrain' / 'export'}")
    runs = sorted((run / "finetune").glob("*/metrics.json")) if (run / "finetune").is_dir() else []
    if runs:
        lines.append(f"  finetune  {'run':<22}{'task':<7}{'init':<12}{'image':<7}{'dev F1':>8}{'test F1':>9}"
                     f"{'epochs':>8}")
        for path in runs:
            m = json.loads(path.read_text())
            init = "pretrained" if m["init"] != "none" else "zoo"
            lines.append(f"            {path.parent.name:<22}{m['task']:<7}{init:<12}{m['image']:<7}"
                         f"{100 * m['dev']['f1']:8.2f}{100 * m['test']['f1']:9.2f}{m['epochs']:8d}")
    sweep = _load(run / "sweeps" / "demo-sweep" / "best.json")
    if sweep:
        best = sweep["best"]
        reused = f"{sweep['reused']} reused, " if sweep.get("reused") else ""
        lines.append(f"  sweep     {sweep['trials']} trials ({reused}{sweep['errored_trials']} errored): best dev F1 "
                     f"{100 * best['dev_f1']:.2f} at alpha {best.get('align.alpha', nan):.3f}, "
                     f"beta {best.get('align.beta', nan):.3f}, K {best.get('align.k')}")
    steps = read_steps(run / "steps.jsonl")
    if steps:
        lines.append(f"  time      {wall_seconds(steps) / 60:.1f} min over {len(steps)} steps: " + ", ".join(
            f"{s['step']} {s['seconds']:.0f} s" + ("" if s["rc"] == 0 else f" (exit {s['rc']})") for s in steps))
    if len(lines) == 1:
        lines.append("  (nothing yet)")
    lines.append("  MLflow    make mlflow-ui, then open http://127.0.0.1:5000")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.summary", description=__doc__)
    p.add_argument("run", type=Path)
    a = p.parse_args(argv)
    print("\n".join(summarise(a.run)))
    return 0


if __name__ == "__main__":
    cli_main(main)
