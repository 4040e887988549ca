"""Tiny registered datasets, tasks and shards for the stream tests (written once per session)."""

from __future__ import annotations

import http.server
import io
import shutil
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from generalist.catalog.parts import vqa_parts
from generalist.catalog.records import DATASETS, Dataset, Record
from generalist.catalog.task import TASKS, Task
from generalist.shards.writer import write_dataset

# dataset -> (records per train shard, train shards, validation records, with image)
SIZES = {
    "st_many": (20, 10, 12, True),  # 200 train records in 10 shards: shard-per-slot layout
    "st_few": (17, 3, 5, False),  # 51 records in 3 shards: striped when slots > 3
    "st_tiny": (30, 1, 4, False),  # 30 records in 1 shard: wraps often
}
TASK_OF = {"st_many": "st_task_many", "st_few": "st_task_few", "st_tiny": "st_task_tiny"}


def tiny_png(seed: int) -> bytes:
    image = Image.new("RGB", (8, 8), (seed % 251, (seed // 251) % 251, 7))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _adapter(name: str):
    per_shard, shards, validation, with_image = SIZES[name]

    def iter_records(source: Path, split: str) -> Iterator[Record]:
        count = per_shard * shards if split == "train" else validation
        for i in range(count):
            seed = i + (0 if split == "train" else 10_000) + 100_000 * list(SIZES).index(name)
            yield Record(
                id=f"{name}-{split}-{i}",
                split=split,
                images=(tiny_png(seed),) if with_image else (),
                fields={"question": f"what is {i}?", "answer": f"{name} {i}"},
                meta={"n": i},
            )

    return iter_records


def register() -> None:
    for name in SIZES:
        if name not in DATASETS:
            DATASETS.register(
                Dataset(name=name, iter_records=_adapter(name), splits=("train", "validation"))
            )
        task = TASK_OF[name]
        if task not in TASKS:
            TASKS.register(
                Task(
                    name=task,
                    kind="vqa",
                    dataset=name,
                    instructions=("Answer.", "Reply."),
                    parts=vqa_parts,
                    shots=1 if name == "st_few" else 0,
                )
            )
    if "st_eval_only" not in TASKS:
        TASKS.register(
            Task(
                name="st_eval_only",
                kind="vqa",
                dataset="st_tiny",
                instructions=("Answer.",),
                parts=vqa_parts,
                shots=0,
                train_split=None,
            )
        )


@pytest.fixture(scope="session")
def shard_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shard root with the three st_* datasets (train and validation splits)."""
    register()
    root = tmp_path_factory.mktemp("shards")
    source = tmp_path_factory.mktemp("source")
    for name, (per_shard, *_rest) in SIZES.items():
        write_dataset(name, source, root, shard_size=per_shard, image_size=8, progress=False)
    return root


@pytest.fixture
def global_batches(shard_root: Path):
    """global_batches(mixture, world, batch_size, workers, n, state=None, **build_kwargs) ->
    the first `n` global batches (ids of ranks 0..world-1's batches, concatenated), every rank
    built and run through its dataloader; `state`: loaded (with `reshard`) before iterating."""
    import itertools

    from generalist.mixing.stream import build_stream

    def collect(mixture, world: int, batch_size: int, workers: int, n: int, state=None, **kw):
        reshard = kw.pop("reshard", False)
        per_rank = []
        for rank in range(world):
            stream = build_stream(
                mixture,
                shard_root,
                rank=rank,
                world_size=world,
                batch_size=batch_size,
                num_workers=workers,
                **kw,
            )
            loader = stream.dataloader()
            if state is not None:
                loader.load_state_dict(state, reshard=reshard)
            per_rank.append([[e.id for e in b] for b in itertools.islice(iter(loader), n)])
        return [list(itertools.chain(*(per_rank[r][g] for r in range(world)))) for g in range(n)]

    return collect


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET (whole or one byte range), HEAD and directory listings under the server's root;
    the body bytes sent for each path are added up in `server.served`."""

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _target(self) -> Path:
        return Path(self.server.root, urllib.parse.unquote(self.path.split("?")[0]).lstrip("/"))

    def do_HEAD(self) -> None:  # http.server calls do_<METHOD>
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        target = self._target()
        if target.is_dir():
            links = "".join(f'<a href="{p.name}">{p.name}</a>\n' for p in sorted(target.iterdir()))
            data, status, extra = links.encode(), 200, {"Content-Type": "text/html"}
        elif target.is_file():
            data = target.read_bytes()
            status, extra = 200, {"Accept-Ranges": "bytes"}
            wanted = self.headers.get("Range")
            if wanted:
                first, _, last = wanted.removeprefix("bytes=").partition("-")
                start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
                extra["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data, status = data[start : end + 1], 206
        else:
            self.send_error(404)
            return
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)
            with self.server.lock:
                self.server.served[self.path] = self.server.served.get(self.path, 0) + len(data)


@pytest.fixture
def http_root(shard_root: Path, tmp_path: Path):
    """A real HTTP server on 127.0.0.1 serving a private copy of the shards; yields
    (root URL, the copy's directory, {path: body bytes served})."""
    copy = tmp_path / "served"
    shutil.copytree(shard_root, copy)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.root, server.served, server.lock = copy, {}, threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", copy, server.served
    server.shutdown()
    server.server_close()
    thread.join()
