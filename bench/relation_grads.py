"""Diagnosis: what each loss term pushes, on real batches of a task (default MRE on MNRE), before training.

For each loss term (main, semantic, modality, implicit positives, weighted as in the total), the gradient norm per
parameter group (encoder / crf / rest, as the optimizer splits them), the share of the total's norm that gradient
clipping keeps, and the entity-marker embeddings beside ordinary word embeddings (an [unusedN] row BERT never
trained is near zero, so after the embedding LayerNorm every marker looks alike). Last line: one JSON object.

    python bench/relation_grads.py [--data $MMIE_DATA/mnre] [--task mre] [--batches 4] [overrides ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import common  # noqa: E402,F401
from finetune import task  # noqa: E402
from finetune.batches import MARKER_STYLES  # noqa: E402
from finetune.run import build_config, parse  # noqa: E402
from finetune.trainer import FinetuneTrainer, param_group  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def group_norms(model, prefixes) -> dict[str, float]:
    sq: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            g = param_group(name, prefixes)
            sq[g] = sq.get(g, 0.0) + float(p.grad.pow(2).sum())
    return {g: v ** 0.5 for g, v in sorted(sq.items())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_root = Path(os.environ.get("MMIE_DATA", REPO.parent / "shared" / "data"))
    p.add_argument("--data", type=Path, default=data_root / "mnre")
    p.add_argument("--task", default="mre")
    p.add_argument("--batches", type=int, default=4)
    a, overrides = p.parse_known_args()
    if not a.data.is_dir():
        sys.exit(f"bench/relation_grads.py: no dataset at {a.data} (give --data DIR or set MMIE_DATA)")
    with tempfile.TemporaryDirectory() as tmp:
        args = parse(["--task", a.task, "--data", str(a.data), "--run-dir", f"{tmp}/run", "--tracking-uri",
                      "none", "data.max_train=2000", *overrides])
        trainer = FinetuneTrainer(build_config(args), Path(tmp) / "run", None, quiet=True)
        model, cfg = trainer.model, trainer.cfg
        model.train()
        prefixes = trainer.encoder.pretrained_prefixes(under="encoder.")
        weights = task.weights(cfg)
        out: dict = {"terms": {}, "clip": cfg.train.clip}
        batches = trainer.epoch_batches(1)[:a.batches]
        for term, w in [*weights.items(), ("loss", 1.0)]:
            norms = []
            for idx in batches:
                model.zero_grad(set_to_none=True)
                batch = trainer._batch(trainer.data["train"], idx)
                losses = task.losses(model, batch, torch.Generator().manual_seed(0))
                (w * losses[term]).backward()
                norms.append(group_norms(model, prefixes) | {"value": float(losses[term])})
            out["terms"][term] = {k: sum(n.get(k, 0.0) for n in norms) / len(norms) for k in norms[0]}
        total = sum(v ** 2 for k, v in out["terms"]["loss"].items() if k != "value") ** 0.5
        out["clip_keeps"] = min(1.0, cfg.train.clip / total) if total else 1.0
        emb = trainer.encoder.text.model.get_input_embeddings().weight.detach() if hasattr(
            trainer.encoder.text, "model") else None
        if emb is not None:
            tok = trainer.encoder.tokenizer
            ids = tok.convert_tokens_to_ids(list(MARKER_STYLES["tokens"].values()))
            words = tok.convert_tokens_to_ids(["the", "[", "<", "@", "#", "paris"])
            out["embedding_norm"] = {"markers": [round(float(emb[i].norm()), 4) for i in ids],
                                     "words": [round(float(emb[i].norm()), 4) for i in words]}
        print(json.dumps(out))


if __name__ == "__main__":
    main()
