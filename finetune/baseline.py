"""python -m finetune.baseline spacy --data DIR [--split test] [--out DIR]

Zero-shot spaCy NER on a Twitter-format MNER dataset, its labels mapped onto PER/LOC/ORG/MISC: the floor every
trained model must clear. spaCy runs on the dataset's own tokens (no re-tokenisation)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm

from common.errors import cli_main
from common.zoo import load_spacy
from finetune.examples import Example
from finetune.metrics import ner_scores
from finetune.readers import read_task
from finetune.report import write_report

# OntoNotes labels -> the four MNER types; numeric and temporal labels are not entities here.
SPACY_TO_MNER = {
    "PERSON": "PER",
    "GPE": "LOC", "LOC": "LOC", "FAC": "LOC",
    "ORG": "ORG",
    "NORP": "MISC", "EVENT": "MISC", "WORK_OF_ART": "MISC", "PRODUCT": "MISC", "LAW": "MISC", "LANGUAGE": "MISC",
}


def spacy_tags(examples: list[Example], model: str = "auto", batch_size: int = 256) -> list[list[str]]:
    from spacy.tokens import Doc

    nlp = load_spacy(model)
    docs = (Doc(nlp.vocab, words=ex.tokens) for ex in examples)
    out = []
    for doc in tqdm(nlp.pipe(docs, batch_size=batch_size), total=len(examples), desc="spaCy NER", leave=False):
        tags = ["O"] * len(doc)
        for ent in doc.ents:
            etype = SPACY_TO_MNER.get(ent.label_)
            if etype:
                tags[ent.start] = f"B-{etype}"
                for k in range(ent.start + 1, ent.end):
                    tags[k] = f"I-{etype}"
        out.append(tags)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m finetune.baseline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", choices=["spacy"])
    p.add_argument("--data", type=Path, required=True, help="Twitter-format directory ({train,valid,test}.txt)")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.add_argument("--spacy", default="auto", help="spaCy pipeline name")
    p.add_argument("--out", type=Path, default=None, help="write <split>_spacy.json and a per-type F1 plot here")
    a = p.parse_args(argv)
    split = read_task("mner", a.data)[a.split]
    t0 = time.perf_counter()
    scores = ner_scores([ex.tags for ex in split.examples], spacy_tags(split.examples, a.spacy))
    scores["wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"spaCy zero-shot NER on {split.path} ({len(split)} sentences): "
          f"P {100 * scores['precision']:.2f} R {100 * scores['recall']:.2f} F1 {100 * scores['f1']:.2f}")
    print("  per type F1: " + ", ".join(f"{t} {100 * s['f1']:.1f}" for t, s in scores["per_type"].items()))
    if a.out:
        paths = write_report(scores, a.out, f"{a.split}_spacy", f"spaCy zero-shot on {a.data.name} {a.split}")
        print(f"  report: {paths['json']}")
    return 0


if __name__ == "__main__":
    cli_main(main)
