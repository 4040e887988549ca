"""The reliability suite: what users need before they trust a training system.

    test_checkpoint_faults.py   kill -9 inside training and inside checkpoint saves, then
                                `resume: auto`; a full disk during a save; a checkpoint file
                                crafted to run code when unpickled
    test_corrupt_shards.py      a shard changed after writing (sha256), bad image bytes,
                                pickle payloads and unknown members in a shard; undecodable
                                pixels and a decompression bomb through the collator
    test_cli_errors.py          bad configs and command lines of every kind: one line, exit 2
    test_tracking_outage.py     the MLflow server goes away mid-run; `generalist sync`
    test_guards.py              in one process: damaged checkpoints and the manifest, resume=none,
                                a full disk per writer, the output_dir lock, redaction, the SLURM
                                script's signals, image size limits, YAML keys, small splits
    test_long_runs.py           trained: preemption + exact resume (2 ranks), secrets in every
                                file and line of a run, non-finite stop and skip, bad images
                                with and without skip_bad + exact resume (2 ranks)

Covered elsewhere and not repeated here: two-rank kill -9 between saves + exact resume
(tests/train/test_runs.py), truncated tar / bad JSON / missing member with skip_bad and exact
resume (tests/shards/test_shards.py, tests/mixing/test_errors.py), an interrupted or SIGKILLed
`generalist shard` (tests/shards/test_shards.py), config messages in-process
(tests/train/test_config.py), a Tracker whose server is down then back
(tests/eval/test_tracking.py).

Fixtures: tiny shards (the training tests' synthetic tasks), a tiny-model config, the real
`generalist` command, the real MLflow server (tests/support/mlflow_server.py), and
`damage_image` (undecodable pixels or a decompression bomb in a shard sample).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
import yaml

# The real mlflow server (started with the first test: it takes 10-40 s to answer, time the
# other tests use) and its switchable proxy; the training tests' tiny synthetic shards.
from support.mlflow_server import _mlflow_server_process, mlflow_proxy, mlflow_server
from support.train_config import shard_root, tiny_config_dict

__all__ = ["_mlflow_server_process", "mlflow_proxy", "mlflow_server", "shard_root"]
GENERALIST = str(Path(sys.executable).parent / "generalist")

# What the reliability runs change from the training tests' tiny config.
RELIABILITY_DEFAULTS: dict[str, object] = {
    "model.tiny.text_layers": 1,
    "lora": {"enabled": True},
    "optim.lr": 1e-2,
    "optim.warmup_steps": 0,
    "checkpoint": {"every": 2, "keep": 3},
    "resume": "auto",
}


def tiny_config(shards: Path, out: Path, **overrides: object) -> dict:
    """A tiny LLaVA with LoRA on the tiny tasks, one process, ZeRO-2 on CPU."""
    return tiny_config_dict(shards, out, **{**RELIABILITY_DEFAULTS, **overrides})


@pytest.fixture
def make_config(shard_root: Path, tmp_path: Path):
    """make_config(name, **dotted_overrides) -> a YAML config path; output_dir = path w/o .yaml"""

    def make(name: str = "config.yaml", **overrides: object) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(tiny_config(shard_root, path.with_suffix(""), **overrides)))
        return path

    return make


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """The real `generalist` command in a subprocess (text output captured)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [GENERALIST, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


@pytest.fixture(scope="session")
def cli():
    """cli(*args, cwd=None) -> CompletedProcess of the real `generalist` command."""
    return run_cli


@pytest.fixture(scope="session")
def config_dict():
    """config_dict(shards, out, **dotted_overrides) -> the tiny config as a dict."""
    return tiny_config


def corrupt_pixels(png: bytes) -> bytes:
    """The PNG with its deflate stream zeroed and the IDAT checksum recomputed: a valid
    signature, header and end marker (the shard reader's checks pass), pixels that do not
    decode."""
    at = png.index(b"IDAT") - 4
    (size,) = struct.unpack(">I", png[at : at + 4])
    body = png[at + 8 : at + 10] + bytes(size - 2)  # the zlib header kept, the stream zeros
    chunk = struct.pack(">I", size) + b"IDAT" + body + struct.pack(">I", zlib.crc32(b"IDAT" + body))
    return png[:at] + chunk + png[at + 12 + size :]


def decompression_bomb() -> bytes:
    """A real one: a 20000 x 20000 PNG of 48 kB that decodes to 1.2 GB of RGB."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("1", (20000, 20000)).save(out, format="PNG", compress_level=9)
    return out.getvalue()


def damage_image_member(shard: Path, key: str, how: str) -> None:
    """Rewrite `shard` with sample `key`'s image 0 replaced: "pixels" (corrupt_pixels of it) or
    "bomb" (decompression_bomb); the tar stays well formed."""
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            if name == f"{key}.0.png":
                data = corrupt_pixels(data) if how == "pixels" else decompression_bomb()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="session")
def damage_image():
    """damage_image(shard, key, "pixels" | "bomb"): see damage_image_member."""
    return damage_image_member
