#!/usr/bin/env bash
# Sourced by launch/demo.sh and launch/test.sh: `source launch/setup_env.sh`
# Creates .venv (once), installs the CPU torch wheel first where no torch is present (so no
# multi-GB CUDA build is pulled), then this package with its dev extras, every dependency at the
# version launch/constraints.txt pins (so a fresh clone reproduces the demo's table; setup.cfg
# keeps ranges for library users). Re-runs are quick; a changed constraints.txt reinstalls.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GENERALIST_VENV:-$repo/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip_quiet=(-q --disable-pip-version-check)
constraints="$repo/launch/constraints.txt"
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  "$venv/bin/pip" install "${pip_quiet[@]}" -c "$constraints" "torch==2.13.0" 2>&1 | grep -v "is ignored: it is neither" || true
fi
stamp="$venv/.generalist-installed"
if [ ! -f "$stamp" ] || [ "$repo/setup.cfg" -nt "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ] \
  || [ "$constraints" -nt "$stamp" ]; then
  "$venv/bin/pip" install "${pip_quiet[@]}" -c "$constraints" -e "$repo[dev]" 2>&1 | grep -v "is ignored: it is neither" || true
  "$venv/bin/python" -c "import generalist, deepspeed, transformers, peft, webdataset, mlflow" 
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
cd "$repo"
