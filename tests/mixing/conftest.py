"""Shards of the stream tests' tiny datasets (tests/support/stream_data.py), written once per
session, and a real HTTP server in front of a copy of them."""

from __future__ import annotations

import http.server
import shutil
import threading
import urllib.parse
from pathlib import Path

import pytest

from generalist.shards.writer import write_dataset

from support.stream_data import SIZES, register


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
