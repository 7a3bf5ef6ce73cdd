"""finetune.evaluate: a trained run scored on any dataset of its task."""
import json
import shutil

import pytest

from common.errors import DataError
from finetune.evaluate import evaluate
from helpers.tiny_run import tiny_run


@pytest.fixture(scope="module")
def mner_run(synth_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    run = tiny_run("mner", synth_dir / "twitter", root / "run", root / "mlruns")
    return run, root / "mlruns"


def test_evaluate_reproduces_the_runs_own_test_metrics_and_nests_in_mlflow(mner_run, synth_dir, tmp_path):
    run, mlruns = mner_run
    r = evaluate(run, synth_dir / "twitter", "test", out=tmp_path / "ev", tracking_uri=str(mlruns))
    trained = json.loads((run / "metrics.json").read_text())
    assert r["scores"]["f1"] == trained["test"]["f1"] and r["scores"]["per_type"] == trained["test"]["per_type"]
    assert (tmp_path / "ev" / "predictions.jsonl").read_text() == (run / "predictions.jsonl").read_text()
    assert (tmp_path / "ev" / "reports" / "test_f1.png").is_file()
    assert r["labels"]["unknown_to_model"] == {} and "OTHER is read as MISC" in r["labels"]["mapped"]
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mmie-finetune").experiment_id
    (child,) = client.search_runs([exp], "tags.evaluation = 'true'")
    assert child.data.tags["mlflow.parentRunId"] == trained["mlflow_run_id"]
    assert child.data.metrics["test/f1"] == pytest.approx(trained["test"]["f1"])


def test_evaluate_on_another_dataset_and_label_mismatch_by_name(tmp_path, synth_dir, mner_run):
    run, _ = mner_run
    data = tmp_path / "other"
    shutil.copytree(synth_dir / "twitter", data, ignore=shutil.ignore_patterns("images"))
    r = evaluate(run, data, "dev", out=tmp_path / "ev", tracking_uri="none")
    assert r["missing_images"]["missing"] > 0 and r["split"] == "dev"  # no pictures there: counted
    from finetune.evaluate import label_report
    from finetune.examples import Example, Span, Split, Triple

    ex = Example("x", ["a", "b"], "x.jpg", entities=[Span(0, 1), Span(1, 2)],
                 triples=[Triple(Span(0, 1), Span(1, 2), "lives_in")])
    report = label_report("mjere", ["None", "PER", "member_of"], Split("test", tmp_path, [ex]))
    assert report == {"unknown_to_model": {"lives_in": 1}, "not_in_data": ["member_of"]}
    with pytest.raises(DataError, match="--split 'val'"):
        evaluate(run, data, "val", tracking_uri="none")
