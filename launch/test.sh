#!/usr/bin/env bash
# The test command: bash launch/test.sh [pytest args]
# Installs what it needs (see launch/setup_env.sh), then lint, format check, the dead-code
# check (vulture) and the test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
ruff check .
ruff format --check .
vulture  # dead code: pyproject.toml's [tool.vulture] says where and what it may ignore
# every test, the slow DeepSpeed launches included (plain `pytest` deselects marker `slow`), on
# GENERALIST_TEST_WORKERS pytest-xdist workers (default 2: one a core here; a launch's ranks and
# launcher leave a core idle at times), each test file whole on one worker, so a module's shared
# run (a fixture) is made once
python -m pytest -m "slow or not slow" -n "${GENERALIST_TEST_WORKERS:-2}" --dist loadfile "$@"
