"""Side by side on one trained MJERE run: the cell-wise grid decoding against the typed one (head.typed_decode:
entity types and relations chosen together under the type pairs each relation has in training).

For each decoding the `None` margin is chosen on dev (as training chooses it), then dev and test are scored with
it: triple F1, entity F1 and where each gold triple went (metrics.triple_errors). The grid's log-probabilities are
computed once per split, so both decodings read the same numbers. The type signatures come from the data's train
split (what a run trained on it stores). Last line: one JSON object.

    python bench/joint_decode.py --run RUN --data DIR      # DIR: the MJERE data the run trained on
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


import common  # noqa: E402,F401
from finetune import calibration  # noqa: E402
from finetune.batches import predict_features  # noqa: E402
from finetune.checkpoint import load_trained  # noqa: E402
from finetune.images import resolve_image_root  # noqa: E402
from finetune.metrics import joint_scores  # noqa: E402
from finetune.pos import PosTagger  # noqa: E402
from finetune.readers import read_task  # noqa: E402
from finetune.splits import prepare_split  # noqa: E402
from finetune.wordpair import relation_types  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="a finished MJERE fine-tuning run")
    p.add_argument("--data", required=True, type=Path, help="the MJERE data directory it trained on")
    a = p.parse_args(argv)
    model, cfg = load_trained(a.run)
    if cfg.task != "mjere":
        raise SystemExit(f"{a.run}: a {cfg.task} run; this compares MJERE decodings")
    splits = read_task("mjere", a.data)
    allowed = relation_types(model.classes, [t for ex in splits["train"].examples for t in ex.triples])
    ecfg = replace(cfg, data=replace(cfg.data, dir=str(a.data)))
    root, tagger = resolve_image_root(a.data, None), PosTagger()
    logps = {}
    for name in ("dev", "test"):
        data = prepare_split(ecfg, splits[name], model.encoder, model.classes, root, tagger, model.retriever)
        logps[name] = predict_features(model, data.feats, data.images, model.encoder.tokenizer.pad_token_id,
                                       "mjere", cfg.train.eval_batch_size, f"grid {name}", "relation_logp")
    result = {"run": str(a.run), "stored_margin": float(model.none_margin)}
    for label, rule in (("cellwise", None), ("typed", allowed)):
        dev = splits["dev"].examples
        found = calibration.best_joint_margin(logps["dev"], model.classes, [ex.triples for ex in dev],
                                              [ex.entities for ex in dev], allowed=rule)
        row = {"margin": found["margin"]}
        for name in ("dev", "test"):
            examples = splits[name].examples
            preds = calibration.decode_sentences(logps[name], found["margin"], model.classes, rule)
            s = joint_scores([ex.triples for ex in examples], [q[1] for q in preds], [ex.entities for ex in examples],
                             [q[0] for q in preds])
            row[name] = {"f1": s["f1"], "precision": s["precision"], "recall": s["recall"],
                         "entity_f1": s["entity"]["f1"], "errors": dict(s["errors"])}
            print(f"{label:8s} {name:4s} margin {found['margin']:+.2f}: triple F1 {100 * s['f1']:.2f} "
                  f"(P {100 * s['precision']:.2f} R {100 * s['recall']:.2f}), entity F1 "
                  f"{100 * s['entity']['f1']:.2f}, {dict(s['errors'])}")
        result[label] = row
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
