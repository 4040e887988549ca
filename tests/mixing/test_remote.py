"""Shards under a URL, served by a real HTTP server on 127.0.0.1 (and an S3-compatible server):
the same examples as the local root, exact resume that fetches no finished shard, the cache
bound, and a changed remote shard stopping the run with its name."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from generalist.catalog.mixture import mixture_from_rates
from generalist.cli import main as cli
from generalist.errors import ConfigError, DataError
from generalist.mixing.stream import build_stream
from generalist.shards.cache import ShardCache
from generalist.shards.manifest import split_shards

MANY = mixture_from_rates("many", {"st_task_many": 1.0})  # 10 shards of 20 records, no shots
MIX = mixture_from_rates("m", {"st_task_many": 3.0, "st_task_few": 1.0})  # few: 1-shot pool


def ids(stream, n: int) -> list[tuple[str, str, str]]:
    return [(e.task, e.id, e.prompt) for e in itertools.islice(iter(stream), n)]


def shard_bytes(served: dict[str, int]) -> dict[str, int]:
    """Body bytes the server sent per shard file name."""
    return {Path(p).name: n for p, n in served.items() if p.endswith(".tar")}


def test_remote_root_gives_the_local_examples(shard_root: Path, http_root, tmp_path: Path):
    url, _, served = http_root
    local = ids(build_stream(MIX, shard_root, seed=4, batch_size=4), 120)
    cache = ShardCache(tmp_path / "cache", max_bytes=1 << 30)
    assert ids(build_stream(MIX, url, seed=4, batch_size=4, shard_cache=cache), 120) == local
    assert cache.fetches >= 2 and {p.suffix for p in (tmp_path / "cache").iterdir()} == {".tar"}
    # ranged reads: the same examples, nothing copied
    served.clear()
    ranged = ShardCache(tmp_path / "none", max_bytes=0)
    assert ids(build_stream(MIX, url, seed=4, batch_size=4, shard_cache=ranged), 120) == local
    assert not (tmp_path / "none").exists() and shard_bytes(served)
    # two DataLoader workers read their shares over HTTP as from disk
    loader = build_stream(MIX, url, seed=4, batch_size=4, num_workers=2, shard_cache=cache)
    on_disk = build_stream(MIX, shard_root, seed=4, batch_size=4, num_workers=2)
    take = [[e.id for e in b] for b in itertools.islice(iter(loader.dataloader()), 10)]
    assert take == [[e.id for e in b] for b in itertools.islice(iter(on_disk.dataloader()), 10)]


def test_resume_fetches_no_shard_it_has_finished(shard_root: Path, http_root, tmp_path: Path):
    url, _, served = http_root

    def make(cache: str):
        return build_stream(
            MANY, url, seed=6, batch_size=5, shard_cache=ShardCache(tmp_path / cache, 1 << 30)
        )

    full = ids(make("a"), 150)  # 200 records: no wrap
    first = make("b")
    assert ids(first, 90) == full[:90]
    state = json.loads(json.dumps(first.state_dict()))
    reader = state["readers"]["st_task_many"]
    assert (reader["next"], reader["epoch"], reader["offset"]) == (90, 0, 10)
    layout = first.plans[0].layout
    finished = {layout.shards[i].path.name for i in layout.order(0)[:4]}  # 4 x 20 records
    served.clear()
    resumed = make("c")  # a new process with an empty cache
    resumed.load_state_dict(state)
    assert ids(resumed, 60) == full[90:]
    got = shard_bytes(served)
    assert got and not set(got) & finished, (sorted(got), sorted(finished))
    sizes = {s.path.name: s.bytes for s in split_shards(shard_root, "st_many", "train")}
    assert got == {name: sizes[name] for name in got}  # each fetched whole, once


def test_the_cache_stays_within_its_bound(shard_root: Path, http_root, tmp_path: Path) -> None:
    url, _, _ = http_root
    largest = max(s.bytes for s in split_shards(shard_root, "st_many", "train"))
    cache = ShardCache(tmp_path / "c", max_bytes=int(2.5 * largest))
    remote = build_stream(MANY, url, seed=1, batch_size=4, shard_cache=cache)
    local = build_stream(MANY, shard_root, seed=1, batch_size=4)
    assert ids(remote, 400) == ids(local, 400)  # two epochs through 10 shards
    assert cache.fetches >= 18 and cache.evictions >= cache.fetches - 2
    assert cache.peak_bytes <= cache.max_bytes and cache.used_bytes() <= cache.max_bytes
    assert len(list((tmp_path / "c").glob("*.tar"))) == 2
    tiny = ShardCache(tmp_path / "d", max_bytes=100)
    with pytest.raises(ConfigError, match=r"train-0000\d\d.tar is \d+ bytes, more than the whole"):
        ids(build_stream(MANY, url, seed=1, shard_cache=tiny), 1)


def test_a_changed_remote_shard_is_an_error_naming_it(http_root, tmp_path: Path) -> None:
    url, copy, _ = http_root
    shard = copy / "st_many" / "train-000003.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF  # same size, other bytes
    shard.write_bytes(bytes(data))
    cache = ShardCache(tmp_path / "c", max_bytes=1 << 30)
    stream = build_stream(MANY, url, seed=0, batch_size=4, shard_cache=cache)
    with pytest.raises(DataError, match=rf"shard {url}/st_many/train-000003.tar: the \d+ bytes"):
        ids(stream, 200)
    assert not list((tmp_path / "c").glob(".*.part"))  # nothing half-kept
    # a shard missing from the server is named before anything is read
    (copy / "st_many" / "train-000005.tar").unlink()
    with pytest.raises(DataError, match=rf"shard {url}/st_many/train-000005.tar .* missing"):
        build_stream(MANY, url, shard_cache=cache)


@pytest.fixture
def s3_root(monkeypatch: pytest.MonkeyPatch):
    """A real S3-compatible server (moto) on 127.0.0.1 with an empty bucket; s3fs talks to it
    through fsspec's configuration, as a user's FSSPEC_S3_ENDPOINT_URL would."""
    server_module = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    import fsspec.config

    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    options = {"endpoint_url": f"http://{host}:{port}", "key": "test", "secret": "test"}
    monkeypatch.setitem(fsspec.config.conf, "s3", options)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("bucket")
    yield "s3://bucket/shards"
    server.stop()


def test_shard_cli_uploads_to_s3_and_the_stream_reads_it(
    shard_root: Path, s3_root: str, tmp_path: Path
) -> None:
    args = ["--source", str(tmp_path), "--shard-size", "20", "--image-size", "8"]
    assert cli(["shard", "st_many", *args, "--out", s3_root, "--no-progress"]) == 0
    cache = ShardCache(tmp_path / "c", max_bytes=1 << 30)
    remote = build_stream(MANY, s3_root, seed=2, batch_size=4, shard_cache=cache)
    assert ids(remote, 60) == ids(build_stream(MANY, shard_root, seed=2, batch_size=4), 60)
    assert cache.fetches >= 1
