"""Long runs on shared clusters, trained for real (tiny LLaVA + LoRA, ZeRO-2 on CPU ranks):

reference   2 ranks, 6 steps uninterrupted; shards served over HTTP behind a password and an
            MLflow URI with a password: no file it writes, no MLflow param and no line of its
            output holds the password, which was still used (the server checks it)
preempted   2 ranks; SIGUSR1 to both ranks mid-run (what launch/slurm.sbatch forwards): the
            step finishes, a checkpoint is saved, exit 75; meanwhile its output_dir lock
            (rank 0's, shared by both ranks) refuses a second run; `resume: auto` then ends
            at step 6 with every loss equal to the reference's
non-finite  1 process, optim.lr=1e30: a run refused by a live lock first (exit 2, one line);
            then the default stop (exit 3, one line naming step and tasks, no checkpoint of
            the poisoned state, no null in metrics.jsonl); then optim.nonfinite=skip
bad images  undecodable pixels and a decompression bomb: 1 process without skip_bad (exit 2,
            one line naming shard and key); 2 ranks with skip_bad, uninterrupted and resumed
            from the checkpoint between the two bad samples: equal losses and counts
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import psutil
import pytest
import yaml

from generalist.train.run_lock import LOCK, RunLockError, acquire

from support.deepspeed_runs import launch_env

pytestmark = pytest.mark.slow
DEEPSPEED = str(Path(sys.executable).parent / "deepspeed")
GENERALIST = str(Path(sys.executable).parent / "generalist")
TIMEOUT = 600  # a launch takes ~40 s on 2 idle cores; minutes on a loaded machine
SECRET = "s3cr3t-Pa55word"
USER = "reader"
STEPS = 10


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(config: Path, *overrides: str) -> subprocess.Popen:
    """2 ranks under the deepspeed launcher, own process group; output to <config>.log."""
    cmd = [DEEPSPEED, "--num_gpus", "2", "--master_port", str(_port())]
    cmd += ["--module", "generalist.cli", "train", str(config), *overrides]
    log = open(config.with_suffix(".log"), "a")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=launch_env(), start_new_session=True
    )


def wait(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def train_1(config: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`generalist train` as one process (world of one)."""
    return subprocess.run(
        [GENERALIST, "train", str(config), *overrides],
        capture_output=True,
        text=True,
        env=launch_env(),  # warnings shown: they must not show a password either
        timeout=TIMEOUT,
    )


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    return {row["step"]: row["train/loss"] for row in rows}


def write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


class _Shards(http.server.BaseHTTPRequestHandler):
    """GET (whole or a byte range) and HEAD under the server's root, for basic auth
    USER:SECRET only (401 otherwise); counts the answers of each kind."""

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        want = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
        if self.headers.get("Authorization") != want:
            self.server.counts["refused"] += 1
            self.send_error(401)
            return
        self.server.counts["authorized"] += 1
        path = urllib.parse.unquote(self.path.split("?")[0]).lstrip("/")
        target = Path(self.server.root, path)
        if not target.is_file():
            self.send_error(404)
            return
        data, status, extra = target.read_bytes(), 200, {"Accept-Ranges": "bytes"}
        wanted = self.headers.get("Range")
        if wanted:
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            extra["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


@pytest.fixture(scope="module")
def reference(shard_root, config_dict, tmp_path_factory):
    """The uninterrupted 2-rank run, a password in its shard URL; MLflow in a sqlite file
    (no server to wait for: the MLflow URI's password is the non-finite runs' case)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Shards)
    server.root, server.counts = shard_root, {"authorized": 0, "refused": 0}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host = f"127.0.0.1:{server.server_address[1]}"
    directory = tmp_path_factory.mktemp("reference")
    tracking = f"sqlite:///{directory / 'mlflow.db'}"
    shards = f"http://{USER}:{SECRET}@{host}"
    cfg = config_dict(shards, directory / "reference", steps=STEPS, **{
        "checkpoint": {"every": 3, "keep": 2},
        "logging.mlflow": True, "logging.tracking_uri": tracking, "logging.every": 1,
        "deepspeed": 2,
    })  # fmt: skip
    config = write(directory / "reference.yaml", cfg)
    rc = wait(launch(config))
    server.shutdown()
    server.server_close()
    thread.join()
    log = config.with_suffix(".log").read_text()
    assert rc == 0, log[-4000:]
    return config, log, server.counts


def test_no_secret_in_anything_a_run_writes_or_shows(reference) -> None:
    config, log, counts = reference
    out = config.with_suffix("")
    assert counts["authorized"] > 0 and counts["refused"] == 0  # the real password was sent
    assert sorted(losses(out)) == list(range(1, STEPS + 1))
    written = [p for p in out.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"params.json", "run.json", "trainer.json", "manifest.json", "metrics.jsonl"} <= names
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in log
    params = json.loads((out / "params.json").read_text())
    assert params["shards"].startswith(f"http://{USER}:***@127.0.0.1:")
    from mlflow import MlflowClient

    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    logged = MlflowClient(params["logging.tracking_uri"]).get_run(run_id).data.params
    assert logged["shards"] == params["shards"] and logged["steps"] == str(STEPS)
    assert not [key for key, value in logged.items() if SECRET in value]


def _ranks(proc: subprocess.Popen) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if any(arg.startswith("--local_rank") for arg in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def test_preemption_saves_exits_75_and_resumes_exactly(reference, shard_root, config_dict):
    directory = reference[0].parent
    out = directory / "preempted"
    cfg = config_dict(shard_root, out, steps=STEPS, **{
        "checkpoint": {"every": 3, "keep": 2}, "logging.every": 1, "deepspeed": 2,
    })  # fmt: skip
    config = write(directory / "preempted.yaml", cfg)
    proc = launch(config)
    deadline = time.time() + TIMEOUT
    while not (out / "metrics.jsonl").exists():  # training has begun: step 1 is logged
        assert proc.poll() is None, config.with_suffix(".log").read_text()[-4000:]
        assert time.time() < deadline
        time.sleep(0.05)
    ranks = _ranks(proc)
    assert len(ranks) == 2
    # one lock for the run: rank 0's; a second run into this output_dir is refused, naming it
    holder = json.loads((out / LOCK).read_text())
    assert holder["pid"] in {r.pid for r in ranks} and holder["host"] == socket.gethostname()
    with pytest.raises(RunLockError, match=f"in use by another run \\(pid {holder['pid']} on"):
        acquire(out)
    for rank in ranks:
        rank.send_signal(signal.SIGUSR1)
    rc = wait(proc)
    log = config.with_suffix(".log").read_text()
    assert rc == 75, log[-4000:]
    said = {line[line.index("generalist train: preempted:") :] for line in log.splitlines()
            if "generalist train: preempted:" in line}  # fmt: skip
    assert len(said) == 1, log[-4000:]  # every rank: the same one line
    (line,) = said
    step = max(losses(out))
    assert line == (
        f"generalist train: preempted: stopped by SIGUSR1 after step {step}; checkpoint "
        f"{out / 'checkpoints' / f'step-{step:06d}'} saved; run again with resume=auto to "
        f"continue (exit code 75)"
    )
    assert step < STEPS, "the signal came too late to test a resume"
    assert (out / "checkpoints" / f"step-{step:06d}" / "manifest.json").is_file()
    assert not (out / LOCK).exists()  # released on the way out
    rc = wait(launch(config))
    log = config.with_suffix(".log").read_text()
    assert rc == 0, log[-4000:]
    assert f"resuming from {out / 'checkpoints' / f'step-{step:06d}'} at step {step}" in log
    reference_losses = losses(reference[0].with_suffix(""))
    resumed = losses(out)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for s in range(1, STEPS + 1):
        assert resumed[s] == pytest.approx(reference_losses[s], abs=1e-6), (s, step)


def test_lock_refusal_then_non_finite_stop_and_skip(shard_root, config_dict, tmp_path) -> None:
    out = tmp_path / "nan"
    down = f"http://{USER}:{SECRET}@127.0.0.1:{_port()}"  # nothing listens: warned, redacted
    cfg = config_dict(shard_root, out, steps=STEPS, **{
        "optim.lr": 1e30, "checkpoint": {"every": 2, "keep": 3}, "logging.every": 1,
        "logging.mlflow": True, "logging.tracking_uri": down,
    })  # fmt: skip
    config = write(tmp_path / "nan.yaml", cfg)
    # 1. a live run holds the output_dir (this test process): refused in one line, exit 2
    out.mkdir()
    started = "2026-12-07T00:00:00Z"
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": started}
    (out / LOCK).write_text(json.dumps(me))
    result = train_1(config)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"generalist train: error: output_dir {out} is in use by another run (pid {os.getpid()} "
        f"on host {socket.gethostname()}, started {started}; lock {out / LOCK}); wait for it, "
        f"use another output_dir, or delete the lock if that run is gone"
    )
    assert "Traceback" not in result.stderr and not (out / "metrics.jsonl").exists()
    (out / LOCK).unlink()
    # 2. the default: stop at the first non-finite step, exit 3, nothing of it saved
    result = train_1(config)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert f"MLflow at http://{USER}:***@127.0.0.1:" in result.stderr  # the unreachable warning
    assert SECRET not in result.stdout + result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "non-finite" in x]
    logged = losses(out)
    bad = max(logged, default=0) + 1
    assert line.startswith(f"generalist train: error: non-finite loss at step {bad}; tasks in ")
    tasks = line.split("tasks in its batch: ")[1].split(";")[0].split(", ")
    assert tasks and set(tasks) <= {"train_colors", "train_words"}, line
    assert "null" not in (out / "metrics.jsonl").read_text()
    saved = sorted((out / "checkpoints").glob("step-*")) if (out / "checkpoints").exists() else []
    assert all(int(p.name.split("-")[1]) < bad for p in saved), saved
    assert not (out / LOCK).exists()
    # 3. skip mode: counted and said per step, a stop after 2 in a row
    result = train_1(
        config, "resume=none", "optim.nonfinite=skip", "optim.max_nonfinite_in_a_row=2"
    )
    assert result.returncode == 3, result.stderr[-3000:]
    skipped = [x for x in result.stdout.splitlines() if "update skipped" in x]
    assert skipped == [
        f"generalist train: step {bad}: non-finite loss, update skipped (1 skipped so far; "
        f"tasks: {', '.join(tasks)})"
    ], result.stdout[-2000:]
    (line,) = [x for x in result.stderr.splitlines() if "non-finite" in x]
    assert line.startswith(
        f"generalist train: error: non-finite loss at step {bad + 1}, 2 steps in"
    )
    assert "null" not in (out / "metrics.jsonl").read_text()
    assert SECRET not in result.stdout + result.stderr
    for path in (p for p in out.rglob("*") if p.is_file()):
        assert SECRET.encode() not in path.read_bytes(), path
    moved = list(tmp_path.glob("nan/checkpoints.previous-*"))
    assert len(moved) == (1 if saved else 0)  # resume=none moved the first run's aside


def test_bad_images_on_2_ranks_stop_in_one_line_or_drop_and_resume_exactly(
    shard_root, config_dict, tmp_path, damage_image
) -> None:
    """Undecodable pixels and a decompression bomb in the shards (tar and sample checks pass):
    without skip_bad `generalist train` stops with one line naming shard and key (exit 2);
    with skip_bad 2 ranks train on, warn per dropped example naming shard and key and log
    data/skipped_samples; resumed from the checkpoint after the bomb (the pixels come later),
    the losses and the count equal the uninterrupted run's."""
    import itertools
    import shutil

    from generalist.mixing.stream import build_stream
    from generalist.train.config import load_config
    from generalist.train.preflight import check_config

    root = tmp_path / "shards"
    shutil.copytree(shard_root, root)
    overrides = {"steps": 6, "logging.every": 1, "verify_shards": False}
    cfg = config_dict(root, tmp_path / "skip", **overrides, checkpoint={"every": 2, "keep": 3})
    config = write(tmp_path / "skip.yaml", {**cfg, "skip_bad": True})
    mixture = check_config(load_config(config))
    # each rank's windows (8 examples, 2 steps each) of the clean data: the bomb goes into a
    # colour record of steps 1-2, the bad pixels into one first met in steps 3-6
    windows = [
        [[e.id for e in w] for w in itertools.islice(iter(stream.dataloader()), 3)]
        for stream in (
            build_stream(mixture, shard_root, "train", 0, r, 2, batch_size=8) for r in range(2)
        )
    ]
    early = [i for r in windows for i in r[0] if i.startswith("train-c")]
    late = [i for r in windows for w in r[1:] for i in w if i.startswith("train-c")]
    bomb = early[0]
    pixels = next(i for i in late if i not in early)
    where = {}
    for record, how in ((bomb, "bomb"), (pixels, "pixels")):
        index = int(record.rsplit("c", 1)[1])
        shard, key = root / "train_colors" / f"train-{index // 10:06d}.tar", f"{index:09d}"
        damage_image(shard, key, how)
        where[record] = f"shard {shard} sample {key}: task 'train_colors' example '{record}'"

    # without skip_bad: one line naming shard and key (the bomb comes first), exit 2
    result = train_1(config, "skip_bad=false", f"output_dir={tmp_path / 'stop'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "error" in x]
    assert line.startswith("generalist train: error: ")  # (the preflight's, if it met it)
    assert f"{where[bomb]}: image 0 is 20000 x 20000 = 400,000,000 pixels, above " in line

    # with skip_bad on 2 ranks: trained to the end, each drop named and counted
    rc = wait(launch(config))
    log = config.with_suffix(".log").read_text()
    assert rc == 0, log[-4000:]
    for record in where:  # a warning line naming shard and key (once per rank and message)
        assert f"skipped bad sample: {where[record]}: image 0 " in log, log[-4000:]
    out = tmp_path / "skip"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    skipped = {row["step"]: row["data/skipped_samples"] for row in rows}

    def met(n: int) -> int:  # bad examples in the first n windows of both ranks
        return sum(w.count(r) for rank in windows for w in rank[:n] for r in where)

    assert skipped[1] == skipped[2] == met(1) >= 1  # a window's drops count when it is cut
    assert skipped[6] == met(3) > skipped[2]  # the pixels were met after the checkpoint

    # resumed from step 2 (after the bomb, before the bad pixels) into another output_dir
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(out / "checkpoints" / "step-000002", resumed / "checkpoints" / "step-000002")
    rc = wait(launch(config, f"output_dir={resumed}"))
    log = config.with_suffix(".log").read_text()
    assert rc == 0, log[-4000:]
    again = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in again] == [3, 4, 5, 6]
    for row in again:
        assert row["train/loss"] == pytest.approx(losses(out)[row["step"]], abs=1e-6), row
        assert row["data/skipped_samples"] == skipped[row["step"]], row
