"""A fine-tuned run as an MLflow pyfunc model: in-process and behind `mlflow models serve` on 127.0.0.1."""
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest

from common.ports import free_port
from helpers.tiny_run import tiny_run


def logged_run(task, data, root):
    run = tiny_run(task, data, root / f"run-{task}", root / "mlruns")
    return run, root / "mlruns", json.loads((run / "metrics.json").read_text())["mlflow_model"]


@pytest.fixture(scope="module")
def mner_model(synth_dir, tmp_path_factory):
    return logged_run("mner", synth_dir / "twitter", tmp_path_factory.mktemp("serving"))


def posts(synth_dir):
    picture = sorted((synth_dir / "twitter" / "images").glob("*.jpg"))[0]
    return [{"text": "Michael Jordan visits the Bulls in Chicago"},
            {"text": "Obama speaks at the United Nations in New York", "image": str(picture)},
            {"text": "Obama speaks at the United Nations in New York",
             "image": base64.b64encode(picture.read_bytes()).decode()}], picture


def load(mlruns, uri):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{mlruns / 'mlflow.db'}")
    # dst_path: MLflow otherwise downloads the artifacts into a fresh temp directory it never removes (131 MB a load)
    dst = mlruns.parent / "loaded"
    dst.mkdir(exist_ok=True)
    return mlflow.pyfunc.load_model(uri, dst_path=str(dst))


def test_pyfunc_model_predicts_like_predict_and_refuses_bad_posts(mner_model, synth_dir):
    from mlflow.exceptions import MlflowException

    from finetune.predict import Predictor
    from finetune.checkpoint import load_trained

    run, mlruns, uri = mner_model
    assert uri.startswith("runs:/") and uri.endswith("/model")
    model = load(mlruns, uri)
    sent, picture = posts(synth_dir)
    got = model.predict(pd.DataFrame(sent))
    want = Predictor(*load_trained(run)).predict([{**p, "image": str(picture) if "image" in p else ""}
                                                  for p in sent])
    assert [g["entities"] for g in got] == [w["entities"] for w in want]
    assert got[1]["image"] == str(picture) and got[2]["image"].startswith("base64:")
    assert got[2]["context"] == got[1]["context"] and got[0]["context"] != got[1]["context"]  # the picture was seen
    assert model.metadata.get_input_schema().input_names() == ["text", "tokens", "image"]
    bad = {"no text": {"image": ""}, "neither an existing file nor a base64": {"text": "a b", "image": "no/such.jpg"},
           "not a readable picture": {"text": "a b", "image": base64.b64encode(b"plain text").decode()}}
    for message, post in bad.items():
        with pytest.raises(MlflowException, match=message) as e:
            model.predict(pd.DataFrame([post]))
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"


def test_relation_model_takes_spans_and_refuses_spans_out_of_range(synth_dir, tmp_path):
    from mlflow.exceptions import MlflowException

    run, mlruns, uri = logged_run("mre", synth_dir / "mnre", tmp_path)
    model = load(mlruns, uri)
    (row,) = model.predict(pd.DataFrame([{"text": "Obama visited the Bulls in Chicago", "head": [0, 1],
                                          "tail": [5, 6]}]))
    (rel,) = row["relations"]
    assert rel["head"]["text"] == "Obama" and rel["tail"]["text"] == "Chicago" and rel["label"] in \
        json.loads((run / "model" / "classes.json").read_text())
    with pytest.raises(MlflowException, match="outside the 3 words") as e:
        model.predict(pd.DataFrame([{"text": "a b c", "head": [0, 1], "tail": [2, 9]}]))
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"


def post_json(port, body) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.slow
def test_mlflow_models_serve_answers_and_survives_bad_requests(mner_model, synth_dir, tmp_path):
    run, mlruns, uri = mner_model
    port = free_port()
    bin_dir = os.path.dirname(sys.executable)  # mlflow runs `uvicorn` from PATH: the venv's bin must be on it
    (tmp_path / "tmp").mkdir()  # the server downloads the model into a temp directory it leaves behind: keep it here
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{mlruns / 'mlflow.db'}",
           "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "TMPDIR": str(tmp_path / "tmp")}
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", uri,
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not answer /ping within 180 s"
            time.sleep(0.5)
        sent, picture = posts(synth_dir)
        status, answer = post_json(port, json.dumps({"dataframe_records": sent}))
        assert status == 200
        # the same posts through the CLI (the base64 picture given as its file)
        jsonl = tmp_path / "posts.jsonl"
        jsonl.write_text("".join(json.dumps({**p, "image": str(picture) if "image" in p else ""}) + "\n"
                                 for p in sent))
        cli = subprocess.run([sys.executable, "-m", "finetune.predict", "--run", str(run), "--jsonl", str(jsonl)],
                             capture_output=True, text=True, timeout=300)
        assert cli.returncode == 0, cli.stderr
        want = [json.loads(line) for line in cli.stdout.splitlines()]
        assert [p["entities"] for p in answer["predictions"]] == [w["entities"] for w in want]
        for body, message in [(json.dumps({"dataframe_records": [{"image": ""}]}), "no text"),
                              (json.dumps({"dataframe_records": [{"text": "a", "image": "zz!!"}]}), "base64"),
                              (json.dumps({"dataframe_records": [{"text": 5}]}), "field text"),
                              ("not json", "JSON")]:
            status, err = post_json(port, body)
            assert status == 400 and message in err["message"], (status, err)
        status, answer = post_json(port, json.dumps({"dataframe_records": sent[:1]}))  # still serving
        assert status == 200 and len(answer["predictions"]) == 1
    finally:  # the server and the uvicorn it started share its session: stop them together, by PID
        stop_group(server)
        log.close()


def stop_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=30)
            os.killpg(proc.pid, 0)  # anything left in the group (a worker) gets SIGKILL next
        except (subprocess.TimeoutExpired, ProcessLookupError):
            continue
    proc.wait()
