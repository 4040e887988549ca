"""Shard roots under a URL (fsspec's in-memory filesystem stands in for object storage here;
tests/mixing/test_remote.py uses real HTTP and S3 servers): write, upload, read back."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest

from generalist.catalog.records import Record
from generalist.errors import DataError
from generalist.shards.manifest import load_manifest, read_records, split_shards, verify_dataset
from generalist.shards.storage import RemotePath, as_root, is_url, missing
from generalist.shards.writer import write_dataset


def test_roots_are_paths_or_urls() -> None:
    assert as_root("shards/") == Path("shards") and as_root("file:///data/x") == Path("/data/x")
    root = as_root("s3://bucket/shards")
    assert isinstance(root, RemotePath) and is_url("gs://b/x") and not is_url("./a")
    shard = root / "vqa_rad" / "train-000000.tar"
    assert str(shard) == "s3://bucket/shards/vqa_rad/train-000000.tar"
    assert shard.name == "train-000000.tar" and shard.parent == root / "vqa_rad"


def records_of(make_png, n: int, tag: str):
    def iter_records(source: Path, split: str):
        for i in range(n):
            images = (make_png(seed=i),)
            yield Record(f"{tag}-{i}", split, images, {"answer": f"{tag} {i}"}, {"i": i})

    return iter_records


def test_write_to_a_url_uploads_a_complete_dataset(tmp_path: Path, register, make_png) -> None:
    url = f"memory://{uuid.uuid4().hex}/shards"
    register("toy_up", records_of(make_png, 7, "a"), splits=("train",))
    manifest = write_dataset("toy_up", tmp_path, url, shard_size=3, image_size=8, progress=False)
    assert load_manifest(url, "toy_up") == manifest
    local = write_dataset("toy_up", tmp_path, tmp_path / "out", shard_size=3, image_size=8)
    assert list(read_records(url, "toy_up", "train")) == list(
        read_records(tmp_path / "out", "toy_up", "train")
    )
    shards = split_shards(url, "toy_up", "train")
    assert [s.sha256 for s in shards] == [s["sha256"] for s in local["splits"]["train"]["shards"]]
    verify_dataset(url, "toy_up")  # presence only: nothing is downloaded
    # a smaller re-upload replaces the old copy: no stale shard stays behind
    fs = fsspec.filesystem("memory")
    register("toy_up2", records_of(make_png, 2, "b"), splits=("train",))
    write_dataset("toy_up2", tmp_path, url, shard_size=3, image_size=8, progress=False)
    fs.put_file(str(tmp_path / "out" / "toy_up" / "train-000002.tar"), f"{url}/toy_up2/old.tar")
    write_dataset("toy_up2", tmp_path, url, shard_size=3, image_size=8, progress=False)
    names = sorted(Path(p).name for p in fs.ls(f"{url}/toy_up2", detail=False))
    assert names == ["manifest.json", "train-000000.tar"]
    assert missing([s.path for s in shards]) == []
    fs.rm_file(f"{url}/toy_up/train-000001.tar")
    assert missing([s.path for s in shards]) == [shards[1].path]
    with pytest.raises(DataError, match=r"shard memory://.*/train-000001.tar listed .* missing"):
        verify_dataset(url, "toy_up")


def test_a_missing_remote_dataset_names_its_url() -> None:
    url = f"memory://{uuid.uuid4().hex}/shards"
    with pytest.raises(DataError, match=rf"dataset 'nope' at {url}/nope does not exist"):
        load_manifest(url, "nope")


def test_the_training_config_keeps_a_url_root(tmp_path: Path) -> None:
    from generalist.train.config import load_config

    config = tmp_path / "run.yaml"
    config.write_text("mixture: demo\nmodel: {name_or_path: x}\n")
    assert load_config(config, ["shards=s3://bucket/shards"]).shards == "s3://bucket/shards"
    assert load_config(config, ["shards=data/shards"]).shards == Path("data/shards")
