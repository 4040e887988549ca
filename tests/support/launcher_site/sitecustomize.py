"""Test subprocesses only (tests/conftest.py puts this folder first on PYTHONPATH).

`import deepspeed` imports its autotuner, which imports mlflow whenever it is installed: 1 to 3 s
of every process that imports deepspeed (a launch has four: the `deepspeed` runner,
deepspeed.launcher.launch, two ranks), for an autotuner the tests never run. That one import
fails here; every other `import mlflow` (ours, when a run logs to MLflow) works as usual.
"""

import importlib.abc
import sys


class _NoMlflowForDeepspeedAutotuner(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        autotuner = sys.modules.get("deepspeed.autotuning.autotuner")
        if name == "mlflow" and autotuner is not None and not hasattr(autotuner, "has_mlflow"):
            raise ModuleNotFoundError("mlflow is hidden from deepspeed's autotuner in tests")
        return None


sys.meta_path.insert(0, _NoMlflowForDeepspeedAutotuner())
