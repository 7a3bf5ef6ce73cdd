"""Evaluate a trained run on any dataset of its task and format (e.g. a Twitter-2015 model on Twitter-2017).

    python -m finetune.evaluate --run RUN --data DIR [--split test] [--images DIR] [--out DIR] [--tracking-uri U]

Scores with the published protocol (finetune/metrics.py) and writes, under --out (default RUN/eval/<data>-<split>):
metrics.json, predictions.jsonl and reports/<split>.json + plots, like a training run. Labels that differ between
the model and the data are reported by name in metrics.json ("labels"), never dropped silently: gold relations the
model has no class for (each such triple or pair can only be missed), the model's classes the data never uses,
and the reader's mappings (Twitter's OTHER is read as MISC). Logged to MLflow as a nested run of the trained run
when the run was tracked in the same store (its metrics.json names its MLflow run), else as a run of its own.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

from common.errors import DataError, cli_main
from finetune.examples import Split
from finetune.labels import ENTITY_TYPES, NONE_RELATION

SPLITS = ("train", "dev", "test")


def label_report(task: str, classes: list[str], split: Split) -> dict:
    """What the model's label set and the data's gold labels do not share, by name and count."""
    if task == "mner":
        gold = Counter(s.label for ex in split.examples for s in ex.entities)
        known = {c.split("-", 1)[1] for c in classes if "-" in c}
        note = "Twitter's OTHER is read as MISC"
    else:
        gold = Counter(t.label for ex in split.examples for t in ex.triples)
        known = set(classes) - set(ENTITY_TYPES)  # MJERE's grid classes hold the entity types too
        note = ""
    out = {"unknown_to_model": {k: v for k, v in sorted(gold.items()) if k not in known},
           "not_in_data": sorted(known - set(gold) - {NONE_RELATION})}
    if note:
        out["mapped"] = note
    return out


def evaluate(run: Path, data_dir: Path, split_name: str = "test", images: Path | None = None,
             out: Path | None = None, tracking_uri: str | None = None) -> dict:
    from common.tracking import check_tracking_uri, make_logger
    from finetune.images import resolve_image_root
    from finetune.pos import PosTagger
    from finetune.readers import find_split_file, READERS
    from finetune.report import write_report
    from finetune.checkpoint import load_trained
    from finetune.splits import prepare_split, score, write_predictions

    check_tracking_uri(tracking_uri)
    if split_name not in SPLITS:
        raise DataError(f"--split {split_name!r}: use one of {', '.join(SPLITS)}")
    model, cfg = load_trained(run)
    if not Path(data_dir).is_dir():
        raise DataError(f"data directory {data_dir} does not exist")
    reader, names = READERS[cfg.task]
    split = reader(find_split_file(Path(data_dir), split_name, names), split_name)
    if not split.examples:
        raise DataError(f"{split.path}: no examples for task {cfg.task}")
    ecfg = replace(cfg, data=replace(cfg.data, dir=str(data_dir), images=str(images or "")))
    root = Path(images) if images else resolve_image_root(Path(data_dir), None)
    data = prepare_split(ecfg, split, model.encoder, model.classes, root, PosTagger(), model.retriever)
    from finetune.batches import predict_features

    preds = predict_features(model, data.feats, data.images, model.encoder.tokenizer.pad_token_id, cfg.task,
                             cfg.train.eval_batch_size, f"eval {split_name}")
    scores = score(cfg.task, data, preds)
    out = Path(out or Path(run) / "eval" / f"{Path(data_dir).name}-{split_name}")
    out.mkdir(parents=True, exist_ok=True)
    trained = json.loads((Path(run) / "metrics.json").read_text()) if (Path(run) / "metrics.json").is_file() else {}
    result = {"task": cfg.task, "run": str(run), "data": str(data_dir), "split": split_name,
              "trained_on": cfg.data.dir, "scores": scores, "labels": label_report(cfg.task, model.classes, split),
              "none_margin": float(model.none_margin) if hasattr(model, "none_margin") else None,
              "missing_images": data.image_counts, "image_handling": data.image_handling,
              "truncation": data.truncation, "skipped_input": dict(split.skipped)}
    (out / "metrics.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    write_predictions(out / "predictions.jsonl", cfg.task, split.examples, preds)
    title = f"{cfg.task} {split_name} ({Path(data_dir).name}; trained on {Path(cfg.data.dir).name})"
    paths = write_report(scores, out / "reports", split_name, title)
    logger = make_logger(f"eval-{Path(data_dir).name}-{split_name}", {"run": str(run), "data": str(data_dir),
                         "split": split_name, "task": cfg.task}, tracking_uri, cfg.experiment,
                         tags={"task": cfg.task, "evaluation": "true"}, parent_run_id=trained.get("mlflow_run_id"))
    logger.log_metrics({f"{split_name}/{k}": scores[k] for k in ("f1", "precision", "recall")}, 0)
    for p in [out / "metrics.json", *paths.values()]:
        logger.log_artifact(p)
    logger.close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m finetune.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="a finished fine-tuning run directory")
    p.add_argument("--data", required=True, type=Path, help="dataset directory in the real layout of the run's task")
    p.add_argument("--split", default="test", help="train | dev | test (default test)")
    p.add_argument("--images", type=Path, help="image root (default <data>/images when present)")
    p.add_argument("--out", type=Path, help="output directory (default RUN/eval/<data>-<split>)")
    p.add_argument("--tracking-uri", default="./mlruns", help='MLflow store or server; "none" to disable')
    a = p.parse_args(argv)
    r = evaluate(a.run, a.data, a.split, a.images, a.out, a.tracking_uri)
    s, labels = r["scores"], r["labels"]
    print(f"{r['task']} {a.split} of {a.data}: F1 {100 * s['f1']:.2f} (P {100 * s['precision']:.2f} "
          f"R {100 * s['recall']:.2f}); labels the model lacks: {labels['unknown_to_model'] or 'none'}")
    return 0


if __name__ == "__main__":
    cli_main(main)
