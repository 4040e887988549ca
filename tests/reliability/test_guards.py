"""The reliability guarantees checkable in one process, in seconds (no DeepSpeed launch):
damaged checkpoints and the manifest, resume=none moving checkpoints aside, a full disk
reported by safetensors or torch's zip writer, the output_dir lock, secrets in URLs, duplicate
YAML keys and a micro-batch larger than a train split. The runs that need training are in
test_long_runs.py."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from generalist.errors import ConfigError
from generalist.redact import redact, redact_json
from generalist.train import checkpoint as ckpt
from generalist.train.run_lock import LOCK, RunLockError, acquire, release


def fake_checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    """A step directory with the files a save writes; its manifest when `complete`."""
    path = ckpt.step_dir(root, step)
    for name, size in (("engine/mp_rank_00_model_states.pt", 300), ("rng/rank-0.pt", 40)):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(os.urandom(size))
    (path / "data").mkdir(exist_ok=True)
    (path / "data" / "rank-0.json").write_text("{}")
    (path / "trainer.json").write_text(json.dumps({"step": step, "world_size": 1, "config": {}}))
    if complete:
        ckpt.write_manifest(path)
    return path


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: (p / "engine/mp_rank_00_model_states.pt").unlink(), "is missing"),
        (lambda p: (p / "rng/rank-0.pt").write_bytes(b"x" * 10), "has 10 bytes, the manifest"),
        (lambda p: (p / "data/rank-0.json").write_text("[]"), "does not match its recorded sha256"),
        (lambda p: (p / "trainer.json").unlink(), "trainer.json is missing"),
        (lambda p: (p / ckpt.MANIFEST).unlink(), "manifest.json is missing (the save did not"),
        (lambda p: (p / ckpt.MANIFEST).write_text("{"), "manifest.json is unreadable"),
    ],
    ids=["missing", "truncated", "changed", "no-trainer-json", "no-manifest", "torn-manifest"],
)
def test_resume_auto_skips_a_damaged_checkpoint_naming_the_file(tmp_path, capsys, damage, reason):
    root = tmp_path / "checkpoints"
    fake_checkpoint(root, 2)
    newest = fake_checkpoint(root, 4)
    damage(newest)
    assert ckpt.resolve_resume("auto", root, say=True) == root / "step-000002"
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("generalist train: resume: skipped step-000004: ") and reason in line
    assert str(newest) in line
    # nothing complete: refused in one line (never a silent start at step 0), nothing deleted
    (root / "step-000002" / ckpt.MANIFEST).unlink()
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.resolve_resume("auto", root)
    message = str(err.value)
    assert "\n" not in message and "no complete checkpoint under" in message
    assert "step-000004: " in message and "step-000002: " in message and "resume=none" in message
    assert sorted(p.name for p in root.iterdir()) == ["step-000002", "step-000004"]
    # an explicit path to a damaged checkpoint: refused naming why
    with pytest.raises(ConfigError, match="is not a complete checkpoint"):
        ckpt.resolve_resume(str(newest), root)


def test_keep_1_with_trainer_json_missing_is_refused_not_restarted(tmp_path) -> None:
    """The issue's case: checkpoint.keep 1, trainer.json gone -> no silent step 0 (nor a prune
    of the damaged folder by a later save)."""
    root = tmp_path / "checkpoints"
    only = fake_checkpoint(root, 6)
    (only / "trainer.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"trainer.json is missing"):
        ckpt.resolve_resume("auto", root)
    ckpt.prune(root, keep=1)
    assert only.is_dir()  # prune removes only complete checkpoints older than `keep`


def test_resume_none_moves_checkpoints_aside_never_deletes(tmp_path) -> None:
    root = tmp_path / "checkpoints"
    files = {p.relative_to(root): p.read_bytes() for p in fake_checkpoint(root, 2).rglob("*")
             if p.is_file()}  # fmt: skip
    assert ckpt.resolve_resume(None, root) is None
    moved = ckpt.move_aside(root)
    assert moved is not None and moved.name.startswith("checkpoints.previous-")
    assert not root.exists()
    assert {p.relative_to(moved): p.read_bytes() for p in moved.rglob("*") if p.is_file()} == files
    fake_checkpoint(root, 2)
    again = ckpt.move_aside(root)  # the same second: a second folder, not a merge
    assert again is not None and again != moved and moved.is_dir()
    assert ckpt.move_aside(tmp_path / "nothing") is None


def _safetensors_full() -> Exception:
    from safetensors import SafetensorError

    # the text safetensors' Rust writer gives an io::Error of ENOSPC ("Error while serializing:
    # {err:?}"): it carries no errno attribute
    return SafetensorError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
        'left on device" })'
    )


@pytest.mark.parametrize(
    "error",
    [
        _safetensors_full,
        lambda: RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0"
                             " PytorchStreamWriter failed writing file data/0: file write failed"),
        lambda: OSError(28, "No space left on device"),
    ],
    ids=["safetensors", "torch-zip-writer", "oserror"],
)  # fmt: skip
def test_disk_full_in_any_writer_removes_the_partial_save(tmp_path, error) -> None:
    root = tmp_path / "checkpoints"
    kept = fake_checkpoint(root, 2)
    size = sum(p.stat().st_size for p in kept.rglob("*") if p.name != ckpt.MANIFEST)
    final = ckpt.step_dir(root, 4)
    tmp = final.with_name(final.name + ".tmp")
    with pytest.raises(ckpt.CheckpointError) as err, ckpt._disk_full_keeps_latest(root, final, tmp):
        (tmp / "engine").mkdir(parents=True)
        (tmp / "engine" / "half.pt").write_bytes(b"x" * 100)
        raise error()
    message = str(err.value)
    assert "\n" not in message and f"disk full while writing checkpoint {final}" in message
    assert f"a save needs about {size / 1e6:.1f} MB (the size of step-000002)" in message
    assert "MB is free" in message and f"{kept} is kept as the latest" in message
    assert not tmp.exists() and ckpt.resolve_resume("auto", root) == kept
    # any other error is not a full disk: it propagates as it is
    with (
        pytest.raises(RuntimeError, match="something else"),
        ckpt._disk_full_keeps_latest(root, final, tmp),
    ):
        raise RuntimeError("something else")


def test_output_dir_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path) -> None:
    out = tmp_path / "run"
    path, note = acquire(out)
    assert note is None
    held = json.loads(path.read_text())
    assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    # a second run (here: a second acquire while this process holds it) refuses, naming it
    with pytest.raises(RunLockError) as err:
        acquire(out)
    assert f"pid {os.getpid()} on host {socket.gethostname()}, started {held['started']}" in str(
        err.value
    )
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    release(path)
    assert not path.exists()
    # a stale lock: a process of this host that has exited
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = {"host": socket.gethostname(), "pid": int(dead.stdout), "started": "2026-01-01"}
    (out / LOCK).write_text(json.dumps(stale))
    path, note = acquire(out)
    assert note is not None and "took over the stale lock" in note and dead.stdout.strip() in note
    assert json.loads(path.read_text())["pid"] == os.getpid()
    release(path)
    # another host's lock is never taken over (its processes cannot be seen from here)
    (out / LOCK).write_text(json.dumps({**stale, "host": "elsewhere"}))
    with pytest.raises(RunLockError, match="on host elsewhere"):
        acquire(out)


def _secret(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + "-_.~!$") for _ in range(12))


def test_redact_hides_every_url_password_and_signed_query(tmp_path) -> None:
    rng = random.Random(0)
    for _ in range(200):
        secret, user = _secret(rng), rng.choice(["u", "AKIAEXAMPLE", "first.last"])
        scheme = rng.choice(["https", "http", "s3", "gs", "ftp"])
        url = f"{scheme}://{user}:{secret}@host.example:9000/a/b"
        shown = redact(f"could not open {url} (timeout)")
        assert secret not in shown
        assert f"{scheme}://{user}:***@host.example:9000/a/b" in shown
        query = f"X-Amz-Credential={secret}&X-Amz-Signature={secret[::-1]}&n=1"
        signed = f"https://b.s3.amazonaws.com/x.tar?{query}"
        assert secret not in redact(signed) and secret[::-1] not in redact(signed)
        assert redact(signed).endswith("&n=1")
    for plain in ("/data/shards", "http://127.0.0.1:5000", "file:///x", "user@host:/path"):
        assert redact(plain) == plain
    nested = {"shards": "s3://k:pw@b/p", "list": ["https://a:pw@h/"], "n": 3}
    assert redact_json(nested) == {"shards": "s3://k:***@b/p", "list": ["https://a:***@h/"], "n": 3}


def test_a_key_written_twice_in_yaml_names_both_lines(tmp_path, make_config) -> None:
    from generalist.train.config import load_config

    config = make_config()
    text = config.read_text()
    lines = text.splitlines()
    at = lines.index("tasks:")
    first = lines[at + 1]
    lines.insert(at + 2, first)  # the first task listed twice
    config.write_text("\n".join(lines) + "\n")
    key = first.strip().split(":")[0]
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert str(err.value) == (
        f"{config}: key {key!r} is written twice in one mapping, at line {at + 2} and line "
        f"{at + 3}; keep one"
    )


def test_a_micro_batch_larger_than_a_train_split_warns_in_preflight(make_config) -> None:
    from generalist.catalog.task import TASKS
    from generalist.shards.manifest import load_manifest
    from generalist.train.config import load_config
    from generalist.train.preflight import check_config

    config = make_config()
    cfg = load_config(config)
    counts = {
        name: load_manifest(cfg.shards, TASKS.get(name).dataset)["splits"]["train"]["count"]
        for name in (cfg.tasks or {})
    }
    smallest = min(counts.values())
    with pytest.warns(UserWarning) as caught:
        check_config(load_config(config, [f"batch.micro_batch_size={smallest + 1}"]))
    small = sorted(n for n, c in counts.items() if c == smallest)
    said = [str(w.message) for w in caught if "fewer than batch.micro_batch_size" in str(w.message)]
    assert len(said) == len(small)
    for name, line in zip(small, said, strict=True):
        assert line.startswith(f"task {name!r}: its train split has {smallest} examples")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a micro-batch that fits: no warning
        check_config(load_config(config, [f"batch.micro_batch_size={smallest}"]))
    assert yaml.safe_load(config.read_text())["tasks"]


_FAKE_SRUN = """#!/usr/bin/env bash
# srun as far as the script needs it: drops its options, runs the task in a process group of its
# own and passes USR1/TERM to every process in it (as slurmstepd signals every process of a step)
while [[ "$1" == --* ]]; do shift; done
set -m
"$@" &
pid=$!
trap 'kill -USR1 -- -$pid' USR1
trap 'kill -TERM -- -$pid' TERM
while :; do wait $pid; status=$?; kill -0 $pid 2>/dev/null || break; done
exit $status
"""
_FAKE_LAUNCHER = """#!{python}
# deepspeed's launcher as far as signals go: starts one rank and exits with its code
import json, signal, subprocess, sys
with open("{seen}", "w") as f:
    ignored = signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    json.dump({{"argv": sys.argv[1:], "usr1_ignored": ignored}}, f)
rank = "import signal, sys, time, pathlib\\n" \\
    "signal.signal(signal.SIGUSR1, lambda *a: sys.exit(75))\\n" \\
    "pathlib.Path('{ready}').touch()\\n" \\
    "time.sleep(60)\\n"
sys.exit(subprocess.call([sys.executable, "-c", rank]))
"""


def test_slurm_script_forwards_usr1_to_the_ranks_and_requeues(tmp_path) -> None:
    """launch/slurm.sbatch under a stand-in srun/scontrol: USR1 to the batch shell reaches the
    rank (not the launcher, which ignores it), the rank's exit 75 requeues the job."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen, ready, calls = tmp_path / "seen.json", tmp_path / "ready", tmp_path / "scontrol.log"
    scripts = {
        "srun": _FAKE_SRUN,
        "deepspeed": _FAKE_LAUNCHER.format(python=sys.executable, seen=seen, ready=ready),
        "scontrol": f'#!/usr/bin/env bash\n[ "$1" = show ] && echo node1 || echo "$@" >> {calls}\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    script = Path(__file__).resolve().parents[2] / "launch" / "slurm.sbatch"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "node1", "SLURM_JOB_NUM_NODES": "1", "SLURM_GPUS_ON_NODE": "1",
           "SLURM_NODEID": "0", "SLURM_SUBMIT_DIR": str(tmp_path)}  # fmt: skip
    proc = subprocess.Popen(["bash", str(script), "run.yaml", "steps=5"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.time() + 30
        while not ready.exists():
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR1)
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert calls.read_text().split() == ["requeue", "4242"]
    launcher = json.loads(seen.read_text())
    assert launcher["usr1_ignored"] is True
    assert launcher["argv"][-4:] == ["generalist.cli", "train", "run.yaml", "steps=5"]
    assert "SIGUSR1 from SLURM: the ranks checkpoint after this step" in output
    assert "stopped with a checkpoint (exit 75): requeueing job 4242" in output


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height (IHDR, IEND, no pixel data): what a decompression
    bomb shows before decoding, in 57 bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_an_image_above_max_image_pixels_is_one_line_before_decoding() -> None:
    import io

    from PIL import Image

    from generalist.batching.image_caps import decode_images
    from generalist.catalog.records import Example
    from generalist.errors import DataError
    from generalist.model.config import ModelConfig

    default = ModelConfig.model_fields["max_image_pixels"].default
    assert default == Image.MAX_IMAGE_PIXELS  # the documented default is PIL's own
    bomb = Example("vqa", "x-7", "Q: <image> A:", "yes", images=(_png_header_only(20000, 20000),))
    with pytest.raises(DataError) as err:
        decode_images(bomb, max_image_pixels=default)
    assert str(err.value) == (
        "task 'vqa' example 'x-7': image 0 is 20000 x 20000 = 400,000,000 pixels, above "
        "model.max_image_pixels=89,478,485 (a decompression bomb, or a scan to downscale when "
        "sharding); raise the setting to accept it, or set skip_bad: true to drop such examples"
    )
    with pytest.raises(DataError, match=r"image 0 cannot be decoded \(Image size"):
        decode_images(bomb, max_image_pixels=None)  # PIL's own guard: one line too
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(buffer, format="PNG")
    fine = Example("vqa", "x-8", "Q: <image> A:", "yes", images=(buffer.getvalue(),))
    assert decode_images(fine, max_image_pixels=1200)[0].size == (40, 30)
    with pytest.raises(DataError, match=r"is 40 x 30 = 1,200 pixels, above .*=1,199 "):
        decode_images(fine, max_image_pixels=1199)
