"""Test launches only (tests/support/deepspeed_runs.py puts this folder on PYTHONPATH).

The DeepSpeed launcher's two processes (the `deepspeed` runner, then deepspeed.launcher.launch)
each import all of deepspeed before any rank starts, and deepspeed's autotuner imports mlflow
whenever it is installed: about 3 s of each, one after the other, in every launch, for a tracker
the launcher never uses. Hidden from those two processes only; the ranks import it as usual.
"""

import sys
from pathlib import Path

_argv = sys.orig_argv
if (len(_argv) > 1 and Path(_argv[1]).name == "deepspeed") or "deepspeed.launcher.launch" in _argv[
    :5
]:
    sys.modules["mlflow"] = None  # type: ignore[assignment]  # `import mlflow` raises ImportError
