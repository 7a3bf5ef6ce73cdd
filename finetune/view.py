"""A self-contained HTML page to look at what a trained run gets right and wrong, post by post.

    python -m finetune.view --run RUN [--split test] [--out RUN/view-test.html] [--tracking-uri ./mlruns]

Per post: its picture (a thumbnail; the grey stand-in marked as such), the text with the gold and the predicted
entities highlighted by spaCy's displaCy, relation arcs between entity spans (MRE, MJERE) and the errors: missed,
spurious, wrong type (same words, another type or relation). Posts with errors come first, most errors first;
filters by error kind and by type. The run's per-type F1, training-curve and confusion plots head the page.
The test split is read from RUN/predictions.jsonl; another split is predicted first (finetune.evaluate, written
under RUN/eval/). The page is logged as an artifact of the run's MLflow run when that run is in --tracking-uri.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import sys
from collections import Counter
from pathlib import Path

from common.errors import DataError, MmieError, cli_main
from common.jsonfile import read_jsonl
from finetune.images import default_image, jpeg_data_url

COLORS = {"PER": "#aa9cfc", "LOC": "#ff9561", "ORG": "#7aecec", "MISC": "#e4e7d2"}
KINDS = ("missed", "spurious", "wrong type")
THUMB = 160


def spans_of(tags: list[str]) -> list[dict]:
    from finetune.readers import tags_to_spans

    return [{"start": s.start, "end": s.end, "label": s.label} for s in tags_to_spans(tags)]


def label_errors(gold: dict, pred: dict, field: str) -> list[dict]:
    """Gold vs predicted labels keyed by the same words (`field`: a "span", or a head/tail "pair"): wrong type
    (another label), missed (gold only), spurious (predicted only)."""
    out = [{"kind": "wrong type", field: k, "gold": g, "pred": pred[k], "type": g}
           for k, g in gold.items() if k in pred and pred[k] != g]
    out += [{"kind": "missed", field: k, "gold": g, "type": g} for k, g in gold.items() if k not in pred]
    out += [{"kind": "spurious", field: k, "pred": p, "type": p} for k, p in pred.items() if k not in gold]
    return out


def entity_errors(gold: list[dict], pred: list[dict]) -> list[dict]:
    def by_span(spans):
        return {(s["start"], s["end"]): s["label"] for s in spans}

    return label_errors(by_span(gold), by_span(pred), "span")


def relation_errors(gold: list[dict], pred: list[dict]) -> list[dict]:
    def by_pair(triples):
        return {(t["head"]["start"], t["head"]["end"], t["tail"]["start"], t["tail"]["end"]): t["label"]
                for t in triples}

    return label_errors(by_pair(gold), by_pair(pred), "pair")


def post_view(task: str, row: dict) -> dict:
    """One predictions.jsonl row -> gold/predicted entities and relations and the errors between them."""
    from finetune.labels import NONE_RELATION

    if task == "mner":
        gold, pred = spans_of(row["gold"]), spans_of(row["pred"])
        return {"gold": gold, "pred": pred, "gold_rel": [], "pred_rel": [], "errors": entity_errors(gold, pred)}
    if task == "mre":
        pair = row.get("pair")
        if pair is None:
            raise DataError("predictions.jsonl has no entity pairs (written before they were recorded); re-run "
                            "`python -m finetune.evaluate` on the run to write them")
        h, t = ({"start": a, "end": b, "label": role} for (a, b), role in ((pair["head"], "head"),
                                                                            (pair["tail"], "tail")))
        rel = [{"head": h, "tail": t, "label": lab} for lab in (row["gold"], row["pred"])]
        gold_rel, pred_rel = ([r] if r["label"] not in (None, NONE_RELATION) else [] for r in rel)
        return {"gold": [h, t], "pred": [h, t], "gold_rel": gold_rel, "pred_rel": pred_rel,
                "errors": relation_errors(gold_rel, pred_rel)}
    gold, pred = row["gold"], row["pred"]
    return {"gold": gold["entities"], "pred": pred["entities"], "gold_rel": gold["triples"],
            "pred_rel": pred["triples"], "errors": entity_errors(gold["entities"], pred["entities"])
            + relation_errors(gold["triples"], pred["triples"])}


def char_spans(tokens: list[str], spans: list[dict]) -> tuple[str, list[dict]]:
    text, starts = "", []
    for w in tokens:
        starts.append(len(text))
        text += w + " "
    ends = [s + len(w) for s, w in zip(starts, tokens)]
    return text.rstrip(), [{"start": starts[s["start"]], "end": ends[s["end"] - 1], "label": s["label"]}
                           for s in sorted(spans, key=lambda s: s["start"])
                           if 0 <= s["start"] < s["end"] <= len(tokens)]


def render_entities(tokens: list[str], spans: list[dict]) -> str:
    from spacy import displacy

    text, ents = char_spans(tokens, spans)
    colors = COLORS | {"head": "#fde68a", "tail": "#bfdbfe"}
    return displacy.render({"text": text, "ents": ents}, style="ent", manual=True, page=False,
                           options={"colors": colors})


def render_arcs(tokens: list[str], relations: list[dict]) -> str:
    """displaCy's arcs from each relation's head entity to its tail entity (first words), labelled."""
    from spacy import displacy

    if not relations:
        return ""
    lo = min(min(r["head"]["start"], r["tail"]["start"]) for r in relations)
    hi = max(max(r["head"]["end"], r["tail"]["end"]) for r in relations)
    words = [{"text": w, "tag": ""} for w in tokens[lo:hi]]
    arcs = []
    for r in relations:
        a, b = r["head"]["start"] - lo, r["tail"]["start"] - lo
        if a != b:
            arcs.append({"start": min(a, b), "end": max(a, b), "label": r["label"],
                         "dir": "right" if a < b else "left"})
    longest = max(len(r["label"]) for r in relations)  # room for the label between two words
    return displacy.render({"words": words, "arcs": arcs}, style="dep", manual=True, page=False,
                           options={"compact": True, "distance": max(120, 9 * longest), "offset_x": 60,
                                    "word_spacing": 25})


def thumbnail(store, name: str) -> tuple[str, str]:
    """(data URL, note): the picture as a small JPEG, or the stand-in's grey square marked as such."""
    img, status = store.open(name) if name else (None, "none")
    note = "" if status == "ok" else {"none": "no picture: stand-in", "missing": "picture missing: stand-in",
                                      "unreadable": "picture unreadable: stand-in"}[status]
    return ("" if status != "ok" else jpeg_data_url(img, THUMB)), note  # "": the stand-in, drawn once by CSS


def stand_in_css() -> str:
    return f".standin{{width:{THUMB}px;height:{THUMB}px;background:url({jpeg_data_url(default_image(), THUMB)})}}"


def describe_error(tokens: list[str], e: dict) -> str:
    if "span" in e:
        words = " ".join(tokens[e["span"][0]:e["span"][1]])
    else:
        hs, he, ts, te = e["pair"]
        words = f"{' '.join(tokens[hs:he])} → {' '.join(tokens[ts:te])}"
    labels = {"wrong type": f"{e.get('gold')} predicted as {e.get('pred')}", "missed": f"gold {e.get('gold')}",
              "spurious": f"predicted {e.get('pred')}"}[e["kind"]]
    return (f"<li class='err {e['kind'].replace(' ', '-')}'><b>{e['kind']}</b>: “{html.escape(words)}” "
            f"({html.escape(str(labels))})</li>")


def post_block(task: str, row: dict, view: dict, img: tuple[str, str]) -> str:
    tokens = row["tokens"]
    kinds = sorted({e["kind"] for e in view["errors"]}) or ["correct"]
    types = sorted({str(e["type"]) for e in view["errors"]} | {s["label"] for s in view["gold"] + view["pred"]})
    src, note = img
    picture = f"<img src='{src}' alt='picture of {html.escape(row['uid'])}'>" if src else \
        "<div class='standin' role='img' aria-label='the grey stand-in'></div>"
    rel = ""
    if task != "mner":
        rel = (f"<div class='rel'><h4>gold relations</h4>{render_arcs(tokens, view['gold_rel']) or '<i>none</i>'}"
               f"<h4>predicted relations</h4>{render_arcs(tokens, view['pred_rel']) or '<i>none</i>'}</div>")
    errors = "".join(describe_error(tokens, e) for e in view["errors"]) or "<li class='ok'>no errors</li>"
    return (f"<section class='post' data-kinds='{' '.join(k.replace(' ', '-') for k in kinds)}' "
            f"data-types='{html.escape(' '.join(types))}'>"
            f"<figure>{picture}"
            f"<figcaption{' class=standin-note' if note else ''}>{html.escape(note or row.get('image') or '')}"
            f"</figcaption></figure>"
            f"<div class='body'><div class='uid'>{html.escape(row['uid'])}</div>"
            f"<h4>gold</h4>{render_entities(tokens, view['gold'])}"
            f"<h4>predicted</h4>{render_entities(tokens, view['pred'])}{rel}<ul>{errors}</ul></div></section>")


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222} h1{font-size:1.4em} h4{margin:.4em 0 .1em;font-size:.8em;
color:#666;text-transform:uppercase} .plots img{max-width:32%;margin-right:1%} .post{display:flex;gap:1em;
border-top:1px solid #ddd;padding:.8em 0} figure{margin:0;width:170px;flex:none}
figcaption{font-size:.75em;color:#666} .standin-note{color:#a33}
.body{flex:1;min-width:0} .uid{font-size:.75em;color:#888} .entities{line-height:2.2!important} ul{margin:.3em 0}
.err{color:#a33} .ok{color:#282} .rel{overflow-x:auto} #filters{position:sticky;top:0;background:#fff;padding:.5em 0;
border-bottom:1px solid #ccc;z-index:1} label{margin-right:1em}"""

SCRIPT = """
function applyFilters(){
  const kinds=[...document.querySelectorAll('input[name=kind]:checked')].map(e=>e.value);
  const type=document.getElementById('type').value;
  let shown=0; const posts=document.querySelectorAll('.post');
  posts.forEach(p=>{
    const k=p.dataset.kinds.split(' '), t=p.dataset.types.split(' ');
    const ok=k.some(x=>kinds.includes(x)) && (type==='all' || t.includes(type));
    p.style.display=ok?'':'none'; if(ok) shown++;
  });
  document.getElementById('count').textContent=`showing ${shown} of ${posts.length} posts`;
}
document.querySelectorAll('#filters input, #filters select').forEach(e=>e.addEventListener('change',applyFilters));
applyFilters();"""


def plots(run: Path) -> str:
    out = []
    for name in ("test_f1.png", "test_confusion.png", "curves.png"):
        p = run / "reports" / name
        if p.is_file():
            out.append(f"<img src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}' alt='{name}'>")
    return f"<div class='plots'>{''.join(out)}</div>" if out else ""


def render_page(run: Path, task: str, rows: list[dict], split: str, store, scores: dict | None) -> str:
    views = [post_view(task, r) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: (-len(views[i]["errors"]), i))  # errors first, most first
    blocks = "".join(post_block(task, rows[i], views[i], thumbnail(store, rows[i].get("image") or ""))
                     for i in order)
    counts = Counter(e["kind"] for v in views for e in v["errors"])
    types = sorted({str(e["type"]) for v in views for e in v["errors"]}
                   | {s["label"] for v in views for s in v["gold"]})
    checks = "".join(f"<label><input type='checkbox' name='kind' value='{k.replace(' ', '-')}' checked> {k} "
                     f"({counts.get(k, 0)})</label>" for k in KINDS)
    n_correct = sum(not v["errors"] for v in views)
    checks += f"<label><input type='checkbox' name='kind' value='correct' checked> correct ({n_correct})</label>"
    options = "".join(f"<option value='{html.escape(t)}'>{html.escape(t)}</option>" for t in types)
    f1 = f" — F1 {100 * scores['f1']:.2f}" if scores else ""
    title = f"{task} {split}: {run.name}{f1}"
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}{stand_in_css()}</style></head><body><h1>{html.escape(title)}</h1>{plots(run)}"
            f"<div id='filters'>{checks}<label>type <select id='type'><option value='all'>all</option>{options}"
            f"</select></label><span id='count'></span></div>{blocks}<script>{SCRIPT}</script></body></html>")


def view(run: Path, split: str = "test", out: Path | None = None, tracking_uri: str | None = "./mlruns") -> Path:
    from common.config import load_config
    from finetune.config import FinetuneConfig
    from finetune.images import ImageStore, resolve_image_root

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise MmieError(f"{run}: no config.yaml — not a fine-tuning run directory")
    cfg = load_config(FinetuneConfig, run / "config.yaml")
    scores = None
    if split == "test":
        rows = [row for _, row in read_jsonl(run / "predictions.jsonl")]
        if (run / "metrics.json").is_file():
            scores = json.loads((run / "metrics.json").read_text()).get("test")
    else:
        from finetune.evaluate import evaluate

        result = evaluate(run, Path(cfg.data.dir), split, Path(cfg.data.images) if cfg.data.images else None,
                          tracking_uri=tracking_uri)
        scores = result["scores"]
        rows = [row for _, row in read_jsonl(run / "eval" / f"{Path(cfg.data.dir).name}-{split}"
                                             / "predictions.jsonl")]
    root = Path(cfg.data.images) if cfg.data.images else resolve_image_root(Path(cfg.data.dir), None)
    store = ImageStore(root)
    out = Path(out or run / f"view-{split}.html")
    out.write_text(render_page(run, cfg.task, rows, split, store, scores))
    log_to_run(run, out, tracking_uri)
    return out


def log_to_run(run: Path, page: Path, tracking_uri: str | None) -> None:
    """The page as an artifact of the run's MLflow run, when that run is in the store."""
    if not tracking_uri or tracking_uri == "none" or not (run / "metrics.json").is_file():
        return
    run_id = json.loads((run / "metrics.json").read_text()).get("mlflow_run_id")
    if not run_id:
        return
    import mlflow
    from mlflow.exceptions import MlflowException

    from common.tracking import check_tracking_uri, resolve_tracking_uri

    check_tracking_uri(tracking_uri)
    try:
        mlflow.MlflowClient(resolve_tracking_uri(tracking_uri)[0]).log_artifact(run_id, str(page))
    except MlflowException:
        print(f"note: MLflow run {run_id} is not in {tracking_uri}; the page is not logged there", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m finetune.view", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="a finished fine-tuning run directory")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.add_argument("--out", type=Path, help="default RUN/view-<split>.html")
    p.add_argument("--tracking-uri", default="./mlruns", help='MLflow store or server; "none" to disable')
    a = p.parse_args(argv)
    print(f"wrote {view(a.run, a.split, a.out, a.tracking_uri)}")
    return 0


if __name__ == "__main__":
    cli_main(main)
