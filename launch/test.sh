#!/usr/bin/env bash
# The test command: bash launch/test.sh [pytest args]
# Installs what it needs (see launch/setup_env.sh), then lint, format check, the dead-code
# check (vulture) and the test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
ruff check .
ruff format --check .
vulture  # dead code: pyproject.toml's [tool.vulture] says where and what it may ignore
# every test, the slow DeepSpeed launches included (plain `pytest` deselects marker `slow`)
python -m pytest -m "slow or not slow" "$@"
