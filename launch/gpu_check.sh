#!/usr/bin/env bash
# bash launch/gpu_check.sh [--dry-run] [generalist bench gpu_check options]
#
# The prepared GPU check, for a lent CUDA machine that is bare and offline (Python 3.12 with
# torch, transformers, peft, accelerate; no deepspeed, pydantic, easy-vqa, webdataset, mlflow).
# Before: run `bash launch/prepare_gpu_wheels.sh` here (with network) and carry launch/wheels/.
# It installs launch/wheels/*.whl and this package into a target dir on PYTHONPATH (no pip
# index, no build), then runs
#     python3 -m generalist.cli bench gpu_check --spec configs/gpu_check_qwen2vl_2b.yaml
# which shards easy-vqa and trains a Qwen2-VL-2B-shaped model with random weights (LoRA, bf16,
# ZeRO-2 and -3, checkpoint + resume, eager/flash attention, Liger, `bench train` with MFU),
# prints one JSON line and writes it to launch/gpu_results/<date>-<gpu>.json (and to $OUT when
# that is set, as on the lent machine). Budget: under 8 minutes.
#
# --dry-run: the same steps on CPU with configs/gpu_check_tiny.yaml in under a minute, using the
# installed packages (CI runs it: tests/train/test_gpu_check.py). PYTHON picks the interpreter.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
py="${PYTHON:-python3}"
dry=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry=1; done
site="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-site.XXXXXX")"
trap 'rm -rf "$site"' EXIT
started=$(date +%s)
if [ "$dry" = 0 ] && compgen -G "launch/wheels/*.whl" >/dev/null; then
  "$py" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" launch/wheels/*.whl
  echo "gpu_check: installed $(ls launch/wheels/*.whl | wc -l) wheels into $site"
elif [ "$dry" = 0 ]; then
  echo "gpu_check: no launch/wheels/ (bash launch/prepare_gpu_wheels.sh): installed packages only"
fi
# this package laid out as pip installs it (tasks/ and mixtures/ become generalist.tasks and
# generalist.mixtures), copied rather than pip-installed: nothing to build on the machine
cp -r generalist "$site/generalist"
cp -r tasks "$site/generalist/tasks"
cp -r mixtures "$site/generalist/mixtures"
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
spec="$repo/configs/gpu_check_qwen2vl_2b.yaml"
[ "$dry" = 1 ] && spec="$repo/configs/gpu_check_tiny.yaml"
status=0
# run from the target dir: in the repository root its generalist/ (which has no tasks/ inside)
# would shadow the laid-out copy; later options (yours) override the defaults here
(cd "$site" && "$py" -m generalist.cli bench gpu_check --spec "$spec" \
  --out "$repo/launch/gpu_results" "$@") || status=$?
newest="$(ls -t "$repo"/launch/gpu_results/*.json 2>/dev/null | head -1 || true)"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ] && [ -n "$newest" ]; then
  cp "$newest" "$OUT"/  # what the device tool brings back
fi
echo "gpu_check: $(( $(date +%s) - started )) s, exit $status"
exit "$status"
