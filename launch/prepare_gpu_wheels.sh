#!/usr/bin/env bash
# bash launch/prepare_gpu_wheels.sh   (run here, with network to PyPI; then launch/gpu_check.sh)
# Fills launch/wheels/ (gitignored) with the wheels the lent CUDA machine lacks, for Python 3.12
# on x86-64 Linux: that machine is offline and has torch, transformers, peft, accelerate, timm,
# torchvision, pytest, triton, numpy, pyyaml, pillow, tqdm, einops, msgpack, ninja, psutil,
# py-cpuinfo, nvidia-ml-py, ... but no deepspeed, pydantic, hjson or easy-vqa.
#   deepspeed     built here from its sdist with DS_BUILD_OPS=0: no compiled ops in the wheel;
#                 the check needs none (torch's AdamW, no fused or CPU Adam), any other is JIT
#   pydantic(+core, annotated-types, typing-inspection, typing-extensions), hjson: deepspeed's
#                 and our configs' needs; easy-vqa: the data the check shards
#   liger-kernel  optional Triton kernels (model.liger_kernel), pure Python
# Versions: those of this venv (what the tests run with); liger-kernel is pinned below.
# Not carried: webdataset, mlflow, datasets (the check's code path imports none of them; the
# dry run asserts that). The device tool carries at most 64 MiB: this script prints the total.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo/launch/wheels"
py="${PYTHON:-$repo/.venv/bin/python}"
LIGER_VERSION=0.8.5
version() { "$py" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf "$out"
mkdir -p "$out"
pins=()
for name in pydantic pydantic_core annotated_types typing_inspection typing_extensions hjson easy-vqa; do
  pins+=("$name==$(version "$name")")
done
pins+=("liger-kernel==$LIGER_VERSION")
"$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$out" "${pins[@]}"
# needs torch at build time (this venv's): no build isolation, which would fetch another torch
DS_BUILD_OPS=0 "$py" -m pip wheel --quiet --no-deps --no-build-isolation \
  "deepspeed==$(version deepspeed)" -w "$out"
ls -l "$out"
du -ch "$out"/*.whl | tail -1
