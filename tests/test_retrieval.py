"""Context from the training set (finetune/retrieval.py): the nearest training posts by MiniLM-L6 sentence
embedding, never the post itself or a copy of it, gold types written in on request, the store saved with the
model so that evaluation and prediction retrieve what training did."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import MmieError
from finetune.examples import Example, Span
from finetune.retrieval import Retriever, embed, render

REPO = Path(__file__).resolve().parents[1]


def ex(uid, text, entities=()):
    return Example(uid, text.split(), "", entities=[Span(*e) for e in entities])


TRAIN = [
    ex("t:1", "Kevin Durant scores 30 as the Warriors beat the Lakers", [(0, 2, "PER"), (6, 7, "ORG"), (9, 10, "ORG")]),
    ex("t:2", "Heavy rain and flooding expected in Houston tonight", [(6, 7, "LOC")]),
    ex("t:3", "Apple unveils the new iPhone in Cupertino", [(0, 1, "ORG"), (4, 5, "MISC"), (6, 7, "LOC")]),
    ex("t:4", "Stephen Curry and the Warriors win again in Oakland", [(0, 2, "PER"), (4, 5, "ORG"), (8, 9, "LOC")]),
    ex("t:5", "Kevin Durant scores 30 as the Warriors beat the Lakers", [(0, 2, "PER"), (6, 7, "ORG"), (9, 10, "ORG")]),
]


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    return Retriever.build(TRAIN, k=2, form="labelled", persist=False)


def test_render_writes_gold_types_after_their_entities_or_only_the_entities():
    assert render(TRAIN[2], "labelled") == "Apple (organization) unveils the new iPhone (misc) in Cupertino (location)"
    assert render(TRAIN[2], "text") == "Apple unveils the new iPhone in Cupertino"
    assert render(TRAIN[0], "entities") == "Kevin Durant (person) ; Warriors (organization) ; Lakers (organization)"
    untyped = ex("m:1", "a b c", [(0, 1, "")])  # MNRE spans carry no type
    assert render(untyped, "labelled") == "a b c" and render(untyped, "entities") == ""
    with pytest.raises(MmieError, match="retrieve_as"):
        Retriever.build(TRAIN, k=1, form="tags", persist=False)


def test_nearest_posts_first_never_the_post_itself_or_its_copy(retriever):
    # t:1 and t:5 have the same words: neither may retrieve the other (nor itself)
    rows = retriever.neighbours([TRAIN[0], TRAIN[4]], persist=False)
    assert all(0 not in r and 4 not in r for r in rows)
    assert rows[0][0] == 3 and rows[1][0] == 3  # the other Warriors post is the nearest
    query = ex("q:1", "Durant and the Warriors lose to the Lakers")
    (near,) = retriever.neighbours([query], persist=False)
    assert len(near) == 2 and set(near) & {0, 4} and 1 not in near  # basketball, not the Houston weather
    (ctx,) = retriever.contexts([query], ["No picture is available for this post."], persist=False)
    parts = ctx.split(" | ")
    assert parts[0] == "No picture is available for this post." and len(parts) == 3
    assert parts[1] == retriever.texts[near[0]] and "(person)" in ctx
    assert retriever.contexts([query], [""], persist=False)[0].split(" | ")[0] == retriever.texts[near[0]]


def test_queries_ranked_in_blocks_give_the_same_neighbours(retriever, monkeypatch):
    import finetune.retrieval

    whole = retriever.neighbours(TRAIN, persist=False)
    monkeypatch.setattr(finetune.retrieval, "BLOCK", 2)  # 5 queries: blocks of 2, 2, 1
    assert retriever.neighbours(TRAIN, persist=False) == whole and len(whole) == 5


def test_a_store_smaller_than_k_gives_what_it_has():
    small = Retriever.build(TRAIN[:2], k=5, form="text", persist=False)
    (rows,) = small.neighbours([TRAIN[0]], persist=False)
    assert rows == [1]  # the only other post; the post itself is never among them


def test_entities_form_gives_only_the_neighbours_typed_entities():
    store = TRAIN[:4] + [ex("t:6", "Durant and the Warriors again tonight")]  # a neighbour with no gold entity
    ents = Retriever.build(store, k=2, form="entities", persist=False)
    (rows,) = ents.neighbours([ex("q:3", "Durant and the Warriors again")], persist=False)
    assert 4 in rows  # the entity-less post is among the nearest ...
    (ctx,) = ents.contexts([ex("q:3", "Durant and the Warriors again")], ["No picture."], persist=False)
    other = ents.texts[[r for r in rows if r != 4][0]]
    assert ctx == f"No picture. | {other}" and "(person)" in other  # ... and adds nothing, not an empty part


def test_embeddings_cached_by_content_and_a_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("MMIE_CACHE", str(tmp_path))
    texts = [" ".join(e.tokens) for e in TRAIN[:3]]
    first = embed(texts)
    (path,) = (tmp_path / "retrieval").glob("*.safetensors")
    assert first.shape == (3, 384) and abs(float(first[0].norm()) - 1.0) < 1e-5
    path.write_bytes(b"not a safetensors file")
    again = embed(texts)
    assert (again - first).abs().max() < 1e-5 and path.stat().st_size > 1000  # rebuilt and rewritten


def test_store_round_trip_and_an_unreadable_store_names_its_directory(retriever, tmp_path):
    retriever.save(tmp_path / "retrieval")
    back = Retriever.load(tmp_path / "retrieval")
    assert back.texts == retriever.texts and back.k == 2 and (back.vectors == retriever.vectors).all()
    query = ex("q:2", "Rain in Houston again")
    assert back.neighbours([query], persist=False) == retriever.neighbours([query], persist=False)
    (tmp_path / "retrieval" / "store.json").write_text("{")
    with pytest.raises(MmieError, match="retrieval store is unreadable"):
        Retriever.load(tmp_path / "retrieval")


def test_a_run_with_retrieval_saves_its_store_and_evaluates_and_predicts_from_it(synth_dir, tmp_path):
    from finetune.evaluate import evaluate
    from finetune.run import main as finetune_main

    run, data = tmp_path / "run", synth_dir / "twitter"
    assert finetune_main(["--task", "mner", "--data", str(data), "--init", "none", "--run-dir", str(run),
                          "--tracking-uri", str(tmp_path / "mlruns"), "train.epochs=1", "data.max_train=24",
                          "train.batch_size=8", "model.image_size=64", "data.retrieve=2",
                          "data.retrieve_as=labelled"]) == 0
    store = json.loads((run / "model" / "retrieval" / "store.json").read_text())
    assert store["k"] == 2 and len(store["texts"]) == 24  # the training posts the run used
    trained = json.loads((run / "metrics.json").read_text())
    again = evaluate(run, data, "test", out=tmp_path / "eval", tracking_uri=str(tmp_path / "mlruns"))
    assert again["scores"]["f1"] == pytest.approx(trained["test"]["f1"])  # the saved store retrieves the same
    out = subprocess.run([sys.executable, "-m", "finetune.predict", "--run", str(run), "--text",
                          "Look at Jordan today !"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    # MNER's default gives a post without its picture no context (mner.yaml), so the context is the two
    # training posts alone (a tweet may itself hold "|")
    assert any(row["context"] == f"{a} | {b}" for a in store["texts"] for b in store["texts"] if a is not b)
