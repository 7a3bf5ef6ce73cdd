"""python -m pretrain.prepare --annotations FILE --data-json FILE --images DIR --out DIR [options]

NewsCLIPpings-format pairs -> WebDataset shards carrying everything pretraining needs: the image (jpg), the
caption (txt) and a json with the match label, the object boxes, the teacher's top-k entity soft labels per box
and top-k relation soft labels per image, and the source ids. The teacher and the detector run here, once per
distinct image, never inside the training loop. Beside the shards: vocab.json, manifest.json (both
deterministic) and stats.json (wall times, backend: what varies from run to run).

The work is a plan of units fixed before any worker runs (pretrain/plan.py: label units of `--batch-size`
pictures, shard units of `--shard-size` pairs), run by `--backend inline|process|ray` (pretrain/backends.py) with
the same unit functions (pretrain/units.py), so the bytes written are the same whatever the backend, worker count
or finishing order; `--resume` continues a killed run from the units it finished.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from common.config import load_config
from common.errors import ConfigError, DataError, MmieError, cli_main
from common.jsonfile import load_json, write_json
from common.teacher import ENTITY_PROMPT, RELATION_PROMPT
from pretrain.config import PrepareConfig
from pretrain.backends import make_backend
from pretrain.newsclippings import Pair, read_pairs
from pretrain.plan import make_plan
from pretrain.units import load_models
from pretrain.vocab import DEFAULT_RELATIONS, entity_vocab, relation_vocab

OUTPUTS = ("vocab.json", "manifest.json", "stats.json")  # beside the shards; stats.json holds what varies per run


def vocab_digest(vocab: dict) -> str:
    text = json.dumps([vocab["entities"], vocab["relations"]], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def read_vocab(path: Path) -> dict:
    """A vocab.json written by an earlier prepare (e.g. the train split's, reused for val), checked field by field."""
    vocab = load_json(path, f"--vocab {path} does not exist", f"{path}: not a vocab.json written by pretrain.prepare")
    if not isinstance(vocab, dict):
        raise DataError(f"{path}: expected a JSON object with entities, relations, entity_prompt, relation_prompt")
    for field in ("entities", "relations"):
        value = vocab.get(field)
        if not isinstance(value, list) or not value or not all(isinstance(x, str) and x for x in value):
            raise DataError(f"{path}: field {field}: expected a non-empty list of names")
    for field in ("entity_prompt", "relation_prompt"):
        value = vocab.get(field)
        if not isinstance(value, str) or value.count("{}") != 1:
            raise DataError(f"{path}: field {field}: expected a prompt with one {{}} slot, got {value!r:.60}")
    return vocab


def build_vocab(pairs: list[Pair], cfg: PrepareConfig) -> dict:
    if cfg.vocab:
        return read_vocab(Path(cfg.vocab))
    captions = sorted({p.caption for p in pairs})
    relations = relation_vocab(Path(cfg.relations) if cfg.relations else DEFAULT_RELATIONS)
    vocab = {"entities": entity_vocab(captions, cfg.entities), "relations": relations,
             "entity_prompt": ENTITY_PROMPT, "relation_prompt": RELATION_PROMPT}
    if not vocab["entities"]:
        raise DataError(f"{cfg.annotations}: the captions hold no nouns, so there is no entity vocabulary")
    return vocab


def plan_key(cfg: PrepareConfig, vocab: dict, n_pairs: int) -> str:
    """What fixes the output bytes (not who computes them): a resumed run must have the same."""
    fixed = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("backend", "workers", "ray_address",
                                                                           "resume", "out")}
    text = json.dumps([fixed, vocab_digest(vocab), n_pairs], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def prepare(cfg: PrepareConfig) -> dict:
    """Write the shards, vocab.json, manifest.json and stats.json to `cfg.out`. Everything is built in a staging
    directory beside it and swapped in only when complete, so a run that fails (bad flag, missing weights, nearly
    every pair skipped) leaves an earlier output untouched; a killed run leaves its finished units there for
    `--resume`."""
    out = Path(cfg.out)
    staging = out.parent / f".{out.name}.partial"
    if not cfg.resume:
        shutil.rmtree(staging, ignore_errors=True)
    (staging / "units").mkdir(parents=True, exist_ok=True)
    done = False
    try:
        manifest = _prepare_into(staging, cfg)
        out.mkdir(parents=True, exist_ok=True)
        for old in [*out.glob("shard-*.tar"), *(out / n for n in OUTPUTS)]:
            old.unlink(missing_ok=True)  # a re-run replaces the shards, never mixes them
        for new in sorted(staging.glob("shard-*.tar")) + [staging / n for n in OUTPUTS]:
            new.replace(out / new.name)
        done = True
    except MmieError:  # a wrong input or setting: nothing worth resuming (unless --resume was refused: keep it)
        if not cfg.resume:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        finished = list((staging / "units").glob("*-*.json")) if staging.is_dir() else []
        if done or not finished:
            shutil.rmtree(staging, ignore_errors=True)
        else:
            print(f"prepare stopped; its finished units are kept in {staging}: the same command with --resume "
                  f"continues from them", file=sys.stderr)
    return manifest


def check_not_empty(counts: Counter, skipped: Counter, n_annotations: int, pairs: list[Pair], images: Path) -> None:
    """Stop with an error when no sample was written or one reason skipped nearly every pair (>= 95%): that is a
    wrong flag (most often --images pointing at the images/ folder instead of the root data.json's paths are
    relative to), not a dataset to train on."""
    reason, n = max(skipped.items(), key=lambda kv: kv[1], default=("", 0))
    if counts["samples"] and n < 0.95 * n_annotations:
        return
    hint = ""
    if reason == "image file missing" and pairs:
        hint = (f"; looked for images under --images {images} (e.g. {pairs[0].image_path}): is it the root that "
                f"data.json's image_path values are relative to?")
    raise DataError(f"{counts['samples']} samples written: {n} of {n_annotations} pairs skipped as {reason!r}"
                    f"{hint}")


def _run_phase(backend, kind: str, units: list, unit_dir: Path, payload=lambda unit: None) -> tuple[dict, int]:
    """Each unit's result, from unit_dir when a resumed run finished it before, else computed and saved there;
    and how many came from unit_dir."""
    saved = lambda u: unit_dir / u.name.replace(".tar", ".json")  # noqa: E731  (labels-N.json, shard-N.json)
    results = {u.index: json.loads(saved(u).read_text()) for u in units if saved(u).is_file()}
    todo = [u for u in units if u.index not in results]
    bar = tqdm(total=len(units), initial=len(units) - len(todo), desc=f"prepare: {kind}", unit="unit")
    for unit, result in backend.map(kind, [(u, payload(u)) for u in todo]):
        write_json(saved(unit), result)
        results[unit.index] = result
        bar.update()
    bar.close()
    return results, len(units) - len(todo)


def _prepare_into(out: Path, cfg: PrepareConfig) -> dict:
    t0 = time.perf_counter()
    pairs, skipped = read_pairs(Path(cfg.annotations), Path(cfg.data_json), Path(cfg.images))
    n_annotations = len(pairs) + sum(skipped.values())
    vocab = build_vocab(pairs, cfg)
    models = load_models(cfg)  # here too: a missing weights file fails before any worker starts
    teacher, detector = models
    vocab.update(teacher=teacher.name, tau=teacher.tau, top_k=cfg.top_k, detector=detector.name)
    key = plan_key(cfg, vocab, len(pairs))
    key_file = out / "units" / "plan.json"
    if key_file.is_file() and json.loads(key_file.read_text()) != key:
        raise ConfigError(f"--resume: {out} was started with other settings or data; run without --resume")
    write_json(key_file, key)
    label_units, shard_units = make_plan(pairs, cfg.batch_size, cfg.shard_size)
    backend = make_backend(cfg, vocab, models if cfg.backend == "inline" else None)
    try:
        t1 = time.perf_counter()
        labels, (label_results, kept_labels) = {}, _run_phase(backend, "label", label_units, out / "units")
        for result in label_results.values():
            labels.update(result)
        t2 = time.perf_counter()
        written, kept_shards = _run_phase(backend, "write", shard_units, out / "units",
                                          lambda u: ({k: labels[k] for k in u.images}, str(out)))
    finally:
        backend.close()
    results = [written[u.index] for u in shard_units]
    counts = Counter({k: sum(r[k] for r in results) for k in ("samples", "matched", "falsified")})
    for r in results:
        skipped.update(r["skipped"])
    check_not_empty(counts, skipped, n_annotations, pairs, Path(cfg.images))
    vocab["digest"] = vocab_digest(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab, indent=1) + "\n")
    manifest = {"shards": [r["shard"] for r in results if r["shard"]],
                "samples_per_shard": [r["samples"] for r in results if r["shard"]], "samples": counts["samples"],
                "matched": counts["matched"], "falsified": counts["falsified"], "pairs_in": n_annotations,
                "images": sum(not isinstance(v, str) for v in labels.values()),
                "skipped": dict(sorted(skipped.items())),
                "teacher": teacher.name, "detector": detector.name, "vocab_digest": vocab["digest"],
                "entities": len(vocab["entities"]), "relations": len(vocab["relations"]),
                "annotations": str(cfg.annotations)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    wall = time.perf_counter() - t0
    stats = {"wall_s": round(wall, 1), "label_s": round(t2 - t1, 1), "write_s": round(time.perf_counter() - t2, 1),
             "pairs_per_s": round(len(pairs) / wall, 2), "backend": cfg.backend, "threads": cfg.threads,
             "workers": 1 if cfg.backend == "inline" else cfg.workers, "ray_nodes": getattr(backend, "nodes", None),
             "label_units": len(label_units), "shard_units": len(shard_units),
             "units_resumed": kept_labels + kept_shards}
    (out / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    return manifest | {"stats": stats}


REQUIRED = ("annotations", "data_json", "images", "out")
HELP = {"annotations": "NewsCLIPpings annotations/<split>.json",
        "data_json": "VisualNews data.json (id -> caption, image_path)",
        "images": "root that data.json's image paths are relative to", "out": "shard directory",
        "teacher": "label-bridge | clip:<arch>:<weights.pt>", "detector": "crops | yolo:<weights.pt>",
        "entities": "M: entity vocabulary size (top spaCy nouns)",
        "relations": "relation names, one per line (default: pretrain/relations.txt)",
        "vocab": "reuse this vocab.json (e.g. the train split's for val)",
        "top_k": "soft-label entries kept per box / image; 0: the full distribution (PROMU)",
        "max_boxes": "object boxes per image",
        "shard_size": "samples per shard", "batch_size": "pairs per teacher batch",
        "teacher_size": "image size the label-bridge teacher sees",
        "tau": "teacher temperature (default: the teacher's)",
        "backend": "who runs the units: inline | process | ray (the bytes written are the same)",
        "workers": "process / ray workers, each loading the detector and teacher once",
        "threads": "torch threads per worker, inline too (pinned: the output never depends on it)",
        "ray_address": "ray: a running cluster (auto, HOST:6379); default: a local Ray for the run",
        "resume": "continue a killed run from the finished units in its staging directory"}


def parse(argv: list[str] | None = None) -> PrepareConfig:
    """The command line as a checked PrepareConfig: each flag given (--top-k 5) is the dotted override top_k=5 on
    the dataclass defaults, so the flags, their types and their ranges have one source (pretrain/config.py)."""
    p = argparse.ArgumentParser(prog="python -m pretrain.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(PrepareConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name in REQUIRED:
            p.add_argument(flag, required=True, help=HELP[f.name])
        elif f.type == "bool":
            p.add_argument(flag, action="store_const", const="true", default=argparse.SUPPRESS, help=HELP[f.name])
        else:
            p.add_argument(flag, default=argparse.SUPPRESS, help=f"{HELP[f.name]} (default: {f.default})")
    given = vars(p.parse_args(argv))
    text = {f.name for f in dataclasses.fields(PrepareConfig) if f.type == "str"}  # a path like 2024 stays text
    try:
        return load_config(PrepareConfig, None, [f"{k}={v!r}" if k in text else f"{k}={v}" for k, v in given.items()])
    except ConfigError as e:  # named as the flag the user typed: "prepare.shard_size: ..." -> "--shard-size: ..."
        p.error(re.sub(r"^(?:prepare\.)?(\w+):", lambda m: f"--{m.group(1).replace('_', '-')}:", str(e)))


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    m = prepare(cfg)
    skipped = ", ".join(f"{k} {v}" for k, v in m["skipped"].items()) or "none"
    print(f"{m['samples']} samples ({m['matched']} matched, {m['falsified']} falsified) from {m['images']} images "
          f"in {len(m['shards'])} shards -> {cfg.out} ({m['stats']['wall_s']}s, {cfg.backend}; teacher {m['teacher']}, "
          f"detector "
          f"{m['detector']}; {m['entities']} entities, {m['relations']} relations); skipped: {skipped}")
    return 0


if __name__ == "__main__":
    cli_main(main)
