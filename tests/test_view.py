"""finetune.view: the HTML viewer of a run's predictions, checked in headless Chromium."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from finetune.view import entity_errors, post_view, render_page, view
from helpers.tiny_run import tiny_run

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("MMIE_TEST_ARTIFACTS", REPO / "runs" / "test-artifacts"))


def chromium(*args, cwd) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium is not installed (.ci/run installs Debian's chromium)")
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                           f"--user-data-dir={cwd / 'chromium-profile'}", *args], capture_output=True, text=True,
                          timeout=180, cwd=cwd)


def load_in_chromium(page: Path, shot: Path, tmp: Path) -> str:
    """The DOM after the page's script ran; fails on any console message (errors, uncaught exceptions)."""
    dom = chromium("--dump-dom", page.as_uri(), cwd=tmp)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    shot.parent.mkdir(parents=True, exist_ok=True)
    r = chromium("--window-size=1280,1600", f"--screenshot={shot}", page.as_uri(), cwd=tmp)
    assert r.returncode == 0 and shot.stat().st_size > 10_000, r.stderr[-2000:]
    return dom.stdout


def test_errors_are_classified_by_kind():
    gold = [{"start": 0, "end": 2, "label": "PER"}, {"start": 3, "end": 4, "label": "LOC"},
            {"start": 5, "end": 6, "label": "ORG"}]
    pred = [{"start": 0, "end": 2, "label": "PER"}, {"start": 3, "end": 4, "label": "ORG"},
            {"start": 7, "end": 8, "label": "MISC"}]
    kinds = sorted((e["kind"], e["type"]) for e in entity_errors(gold, pred))
    assert kinds == [("missed", "ORG"), ("spurious", "MISC"), ("wrong type", "LOC")]
    row = {"uid": "x", "tokens": "Obama met Merkel in Berlin".split(), "image": "", "gold": "per/per/peer",
           "pred": "None", "pair": {"head": [0, 1], "tail": [2, 3]}}
    v = post_view("mre", row)
    assert [e["kind"] for e in v["errors"]] == ["missed"] and v["pred_rel"] == []
    span = {"start": 0, "end": 1, "label": "PER"}
    tail = {"start": 4, "end": 5, "label": "LOC"}
    row = {"uid": "y", "tokens": row["tokens"], "image": "",
           "gold": {"entities": [span, tail], "triples": [{"head": span, "tail": tail, "label": "loc/loc/contain"}]},
           "pred": {"entities": [span], "triples": []}}
    assert sorted(e["kind"] for e in post_view("mjere", row)["errors"]) == ["missed", "missed"]


@pytest.fixture(scope="module")
def mner_run(synth_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("view")
    run = tiny_run("mner", synth_dir / "twitter", root / "run", root / "mlruns", "--no-mlflow-model")
    return run, root / "mlruns"


def test_viewer_page_loads_in_chromium_one_block_per_post(mner_run, tmp_path):
    run, mlruns = mner_run
    page = view(run, "test", tmp_path / "view.html", str(mlruns))
    n_posts = len((run / "predictions.jsonl").read_text().splitlines())
    dom = load_in_chromium(page, ARTIFACTS / "view-mner.png", tmp_path)
    assert len(re.findall(r"<section class=\"post\"", dom)) == n_posts
    assert f"showing {n_posts} of {n_posts} posts" in dom  # the filter script ran
    html = page.read_text()
    assert "data:image/jpeg;base64," in html and "picture missing" not in html  # the synthetic pictures are there
    assert "test_f1.png" in html
    import mlflow

    run_id = json.loads((run / "metrics.json").read_text())["mlflow_run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    assert "view.html" in [a.path for a in client.list_artifacts(run_id)]


def test_relation_page_with_arcs_and_stand_in_loads_in_chromium(tmp_path):
    tokens = "Obama met Merkel in Berlin on Monday".split()
    rows = [{"uid": f"mnre:{i}", "tokens": tokens, "image": "missing.jpg", "gold": gold, "pred": pred,
             "pair": {"head": [0, 1], "tail": [2, 3]}}
            for i, (gold, pred) in enumerate([("per/per/peer", "per/per/peer"), ("per/per/peer", "None"),
                                              ("None", "per/loc/place_of_residence"), ("None", "None")])]
    from finetune.images import ImageStore

    page = tmp_path / "mre.html"
    page.write_text(render_page(tmp_path, "mre", rows, "test", ImageStore(tmp_path), {"f1": 0.5}))
    dom = load_in_chromium(page, ARTIFACTS / "view-mre.png", tmp_path)
    assert len(re.findall(r"<section class=\"post\"", dom)) == 4 and "showing 4 of 4 posts" in dom
    assert dom.count("displacy-arc") >= 3 and "picture missing: stand-in" in dom
    first = dom.index("<section")
    assert "missed" in dom[first:dom.index("</section>", first)]  # errors first
