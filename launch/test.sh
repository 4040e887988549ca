#!/usr/bin/env bash
# The test command: bash launch/test.sh [pytest args]
# Installs what it needs (see launch/setup_env.sh), then lint, format check and the test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
ruff check .
ruff format --check .
# every test, the slow DeepSpeed launches included (plain `pytest` deselects marker `slow`)
python -m pytest -m "slow or not slow" "$@"
