"""Test helpers: one importable package, `support.<module>` (pyproject.toml's pytest
`pythonpath = ["tests"]` puts tests/ on sys.path for every test module and conftest).

Scripts that a test launches as processes run outside pytest. Those in this folder
(train_in_turn.py, rank_eval.py) import only the package and load task files by path; as their
folder is their sys.path[0], no module here is named after a package (hence deepspeed_runs, not
launch). Those elsewhere that need a helper put tests/ on sys.path first
(tests/mixing/ds_ranks.py); norm_ranks.py and faulty_train.py need none.
Task modules (tiny_tasks.py, eval_tasks.py) register tasks: they are loaded the way a user's
task file is, by path through generalist.catalog.loading.import_user_module (the path a
config's `imports:` names), so a launched `generalist train` and the test process register one
copy each; their paths are TINY_TASKS and EVAL_TASKS here.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
TINY_TASKS = HERE / "tiny_tasks.py"
EVAL_TASKS = HERE / "eval_tasks.py"
