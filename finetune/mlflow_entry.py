"""The models-from-code entry of mmie's MLflow pyfunc model (finetune/mlflow_model.py): MLflow copies this file
into the logged model and runs it at load time, so loading a model unpickles nothing."""
import mlflow.models

from finetune.mlflow_model import MmieModel

mlflow.models.set_model(MmieModel())
