"""The evaluation tests' fixtures: a real MLflow server for the session (started with the first
test: it takes 10-40 s to answer) and a switchable proxy in front of it."""

from support.mlflow_server import _mlflow_server_process, mlflow_proxy, mlflow_server

__all__ = ["_mlflow_server_process", "mlflow_proxy", "mlflow_server"]
