"""The shard writer and reader: round trip, manifest, checks, interruption, integrity."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from generalist.catalog.records import BadRecord, Record
from generalist.errors import ConfigError, DataError
from generalist.shards.manifest import load_manifest, read_records, split_shards, verify_dataset
from generalist.shards.reader import iter_shard
from generalist.shards.writer import write_dataset


def toy_records(make_png, splits=("train", "test"), per_split=5, images=1):
    """Records with distinct images per split, fields of several JSON types."""
    out = {}
    for s, split in enumerate(splits):
        out[split] = [
            Record(
                id=f"{split}-{n}",
                split=split,
                images=tuple(make_png(seed=100 * s + 10 * n + k) for k in range(images)),
                fields={"question": f"q{n}", "answer": "yes", "n": n, "tags": ["a"]},
                meta={"row": n, "note": "ünïcode"},
            )
            for n in range(per_split)
        ]
    return out


def source_of(records):
    def iter_records(source: Path, split: str):
        yield from records[split]

    return iter_records


def test_round_trip_and_manifest(tmp_path, register, make_png):
    records = toy_records(make_png, images=2)
    register("toy_rt", source_of(records), splits=("train", "test"), version=3)
    manifest = write_dataset(
        "toy_rt", tmp_path, tmp_path / "out", shard_size=2, image_size=16, workers=3
    )

    assert load_manifest(tmp_path / "out", "toy_rt") == manifest
    assert manifest["format_version"] == 1 and manifest["adapter_version"] == 3
    assert manifest["adapter"].endswith(":source_of.<locals>.iter_records")
    assert manifest["image_policy"] == {"size": 16, "pad": True, "channels": 3, "format": "png"}
    assert manifest["fields"] == {
        "answer": "string",
        "n": "integer",
        "question": "string",
        "tags": "array",
    }
    assert manifest["images_per_record"] == {"min": 2, "max": 2}
    assert manifest["skipped"] == {"train": 0, "test": 0}
    train = manifest["splits"]["train"]
    assert train["count"] == 5
    assert [(s["path"], s["count"]) for s in train["shards"]] == [
        ("train-000000.tar", 2),
        ("train-000001.tar", 2),
        ("train-000002.tar", 1),
    ]
    with tarfile.open(tmp_path / "out/toy_rt/train-000001.tar") as tar:
        assert tar.getnames() == [
            "000000002.0.png",
            "000000002.1.png",
            "000000002.json",
            "000000003.0.png",
            "000000003.1.png",
            "000000003.json",
        ]
    for split in ("train", "test"):
        back = list(read_records(tmp_path / "out", "toy_rt", split))
        assert [r.id for r in back] == [r.id for r in records[split]]
        for original, read in zip(records[split], back):
            assert (read.split, read.fields, read.meta) == (split, original.fields, original.meta)
            assert len(read.images) == 2
            assert Image.open(io.BytesIO(read.images[1])).size == (16, 16)
    verify_dataset(tmp_path / "out", "toy_rt")
    # Same input, same bytes, whatever the thread count: shards are reproducible (tar mtime 0).
    again = write_dataset(
        "toy_rt", tmp_path, tmp_path / "again", shard_size=2, image_size=16, workers=1
    )
    assert [s["sha256"] for s in again["splits"]["train"]["shards"]] == [
        s["sha256"] for s in train["shards"]
    ]


def test_iter_shard_start_skips_without_decoding(tmp_path, register, make_png):
    register("toy_start", source_of(toy_records(make_png, per_split=5)), splits=("train", "test"))
    write_dataset("toy_start", tmp_path, tmp_path, shard_size=5, image_size=8, progress=False)
    (shard,) = split_shards(tmp_path, "toy_start", "train")
    assert shard.count == 5 and len(shard.sha256) == 64
    assert [r.id for r in iter_shard(shard.path, start=3)] == ["train-3", "train-4"]
    assert list(iter_shard(shard.path, start=5)) == []


def test_limit_and_splits(tmp_path, register, make_png):
    register("toy_limit", source_of(toy_records(make_png)), splits=("train", "test"))
    manifest = write_dataset(
        "toy_limit", tmp_path, tmp_path, splits=["test"], limit=2, image_size=8
    )
    assert list(manifest["splits"]) == ["test"] and manifest["splits"]["test"]["count"] == 2
    with pytest.raises(DataError, match=r"no split 'train'.*\['test'\]"):
        split_shards(tmp_path, "toy_limit", "train")
    with pytest.raises(ConfigError, match=r"has splits \['train', 'test'\]; not \['validation'\]"):
        write_dataset("toy_limit", tmp_path, tmp_path, splits=["validation"])


def test_duplicate_id_across_splits_names_both(tmp_path, register, make_png):
    records = toy_records(make_png)
    records["test"][2] = Record("train-1", "test", (make_png(seed=999),), {"answer": "x"})
    register("toy_dup", source_of(records), splits=("train", "test"))
    with pytest.raises(
        DataError, match=r"id 'train-1' appears twice, in split 'train' and in split 'test'"
    ):
        write_dataset("toy_dup", tmp_path, tmp_path, image_size=8, skip_bad=True)
    assert not (tmp_path / "toy_dup").exists()


def test_same_image_in_two_splits_names_both_records(tmp_path, register, make_png):
    records = toy_records(make_png)
    shared = records["train"][3].images
    records["test"][1] = Record("test-1", "test", shared, {"answer": "x"})
    # The same image twice within one split is fine (easy-vqa asks many questions per image).
    records["train"][4] = Record("train-4", "train", shared, {"answer": "y"})
    register("toy_leak", source_of(records), splits=("train", "test"))
    with pytest.raises(
        DataError,
        match=r"record 'test-1' \(split 'test'\) is identical to an image of record "
        r"'train-3' \(split 'train'\)",
    ):
        write_dataset("toy_leak", tmp_path, tmp_path, image_size=8)
    manifest = write_dataset("toy_leak", tmp_path, tmp_path, image_size=8, skip_bad=True)
    assert manifest["skipped"] == {"train": 0, "test": 1}
    assert manifest["splits"]["train"]["count"] == 5


def test_bad_records_raise_or_are_skipped_and_counted(tmp_path, register, make_png):
    good = make_png(seed=1)

    def iter_records(source, split):
        yield Record("ok-1", split, (good,), {"label": "cat"})
        yield Record("broken-image", split, (b"\x89PNG not really",), {"label": "cat"})
        yield Record("wrong-label", split, (make_png(seed=2),), {"label": "dog"})
        yield BadRecord("labels.csv row 7: empty label")
        yield Record("ok-2", split, (make_png(seed=3),), {"label": "cow"})

    register("toy_bad", iter_records, splits=("train",), labels=("cat", "cow"))
    with pytest.raises(DataError, match=r"record 'broken-image': image 0 does not decode"):
        write_dataset("toy_bad", tmp_path, tmp_path, image_size=8)
    assert not (tmp_path / "toy_bad").exists()
    manifest = write_dataset("toy_bad", tmp_path, tmp_path, image_size=8, skip_bad=True)
    assert manifest["skipped"] == {"train": 3}
    assert [r.id for r in read_records(tmp_path, "toy_bad", "train")] == ["ok-1", "ok-2"]
    examples = manifest["skipped_examples"]
    assert "broken-image" in examples[0]
    assert "has label 'dog', not one of ['cat', 'cow']" in examples[1]
    assert examples[2] == "train: labels.csv row 7: empty label"


def test_label_outside_declared_set_message(tmp_path, register, make_png):
    register(
        "toy_label",
        lambda source, split: iter([Record("r1", split, (), {"label": "dog"})]),
        splits=("train",),
        labels=("cat",),
    )
    with pytest.raises(DataError, match=r"record 'r1' has label 'dog', not one of \['cat'\]"):
        write_dataset("toy_label", tmp_path, tmp_path)


def test_exception_midway_leaves_old_dataset_and_no_temp(tmp_path, register, make_png):
    records = toy_records(make_png)
    state = {"fail": False}

    def iter_records(source, split):
        for n, record in enumerate(records[split]):
            if state["fail"] and split == "test" and n == 2:
                raise KeyboardInterrupt  # what Ctrl-C raises in the middle of a split
            yield record

    register("toy_int", iter_records, splits=("train", "test"))
    first = write_dataset("toy_int", tmp_path, tmp_path, shard_size=2, image_size=8)
    state["fail"] = True
    with pytest.raises(KeyboardInterrupt):
        write_dataset("toy_int", tmp_path, tmp_path, shard_size=1, image_size=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy_int"]  # temp dir removed
    assert load_manifest(tmp_path, "toy_int") == first
    verify_dataset(tmp_path, "toy_int")


def test_fresh_dataset_interrupted_has_no_manifest(tmp_path, register, make_png):
    def iter_records(source, split):
        yield Record("a", split, (make_png(),), {})
        raise RuntimeError("adapter bug")

    register("toy_fresh", iter_records, splits=("train",))
    with pytest.raises(RuntimeError):
        write_dataset("toy_fresh", tmp_path, tmp_path, image_size=8)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match=r"dataset 'toy_fresh' at .* does not exist: no manifest"):
        load_manifest(tmp_path, "toy_fresh")


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from generalist.catalog import DATASETS, Dataset, Record
    from generalist.shards.writer import write_dataset

    root, marker = Path(sys.argv[1]), Path(sys.argv[2])

    def iter_records(source, split):
        for n in range(1000):
            if n == 30:
                marker.write_text("shards are being written")
            if n >= 30:
                time.sleep(0.05)
            yield Record(f"{split}-{n}", split, (), {"n": n})

    DATASETS.register(Dataset(name="toy_kill", iter_records=iter_records, splits=("train",)))
    write_dataset("toy_kill", root, root, shard_size=2, progress=False)
    """
)


def test_sigkill_midway_leaves_no_manifest_and_rerun_replaces(tmp_path, register):
    (tmp_path / "toy_kill").mkdir()
    (tmp_path / "toy_kill" / "train-000000.tar").write_bytes(b"half written by someone")
    marker = tmp_path / "marker"
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path), str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the writer never got going"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    temp = [p for p in tmp_path.iterdir() if p.name.startswith(".toy_kill.tmp-")]
    assert len(temp) == 1 and any(temp[0].glob("train-*.tar"))
    assert not (temp[0] / "manifest.json").exists()
    with pytest.raises(DataError, match=r"toy_kill.* is incomplete .* no manifest\.json"):
        load_manifest(tmp_path, "toy_kill")

    register(
        "toy_kill",
        lambda source, split: iter([Record("x", split, (), {"n": 1})]),
        splits=("train",),
    )
    manifest = write_dataset("toy_kill", tmp_path, tmp_path, progress=False)
    assert manifest["splits"]["train"]["count"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker", "toy_kill"]  # temp cleaned
    assert sorted(p.name for p in (tmp_path / "toy_kill").iterdir()) == [
        "manifest.json",
        "train-000000.tar",
    ]
    assert [r.id for r in read_records(tmp_path, "toy_kill", "train")] == ["x"]


def test_verify_detects_changed_and_missing_shard(tmp_path, register, make_png):
    register("toy_verify", source_of(toy_records(make_png)), splits=("train", "test"))
    write_dataset("toy_verify", tmp_path, tmp_path, shard_size=3, image_size=8)
    shard = tmp_path / "toy_verify" / "test-000001.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"shard .*test-000001\.tar has sha256 .* changed after"):
        verify_dataset(tmp_path, "toy_verify")
    shard.unlink()
    with pytest.raises(DataError, match=r"test-000001\.tar listed in the manifest is missing"):
        verify_dataset(tmp_path, "toy_verify")


def test_truncated_and_corrupt_shards(tmp_path, register, make_png):
    register("toy_trunc", source_of(toy_records(make_png)), splits=("train", "test"))
    write_dataset("toy_trunc", tmp_path, tmp_path, shard_size=5, image_size=8)
    (info,) = split_shards(tmp_path, "toy_trunc", "train")
    data = info.path.read_bytes()
    with tarfile.open(info.path) as tar:
        cut = tar.getmember("000000002.json").offset_data + 10  # inside sample 2's json
    info.path.write_bytes(data[:cut])
    with pytest.raises(DataError, match=r"shard .*train-000000\.tar .*truncated"):
        list(read_records(tmp_path, "toy_trunc", "train"))
    seen: list[str] = []
    kept = list(iter_shard(info.path, skip_bad=True, on_bad=seen.append, count=5))
    assert [r.id for r in kept] == ["train-0", "train-1"]
    (message,) = seen
    assert message.startswith(
        f"shard {info.path} is truncated in sample 000000002 (member 000000002.json"
    )

    # A tar cut exactly between two samples is caught by the manifest's count.
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(info.path, "w") as tar:
        for member, payload in members[:4]:  # samples 0 and 1 (png + json each)
            tar.addfile(member, io.BytesIO(payload))
    with pytest.raises(DataError, match=r"truncated: 2 of its 5 samples"):
        list(read_records(tmp_path, "toy_trunc", "train"))


def test_bad_sample_json_and_missing_member(tmp_path):
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tar:
        for name, payload in [
            ("000000000.json", b'{"id": "a", "split": "train", "fields": {}, "meta": {}}'),
            ("000000001.json", b"{not json"),
            ("000000002.0.png", b"png"),
            (
                "000000003.json",
                json.dumps({"id": "d", "split": "train", "fields": {}, "meta": {}}).encode(),
            ),
            ("000000003.1.png", b"png"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(DataError, match=r"x\.tar sample 000000001: bad 000000001\.json"):
        list(iter_shard(path))
    bad: list[str] = []
    assert [r.id for r in iter_shard(path, skip_bad=True, on_bad=bad.append)] == ["a"]
    assert "sample 000000001: bad" in bad[0]
    assert "sample 000000002: missing member 000000002.json" in bad[1]
    assert "sample 000000003: missing image member(s) [0]" in bad[2]


def test_manifest_missing_or_wrong_version(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(DataError, match=r"is incomplete .*generalist shard half --out"):
        load_manifest(tmp_path, "half")
    (tmp_path / "half" / "manifest.json").write_text('{"format_version": 99}')
    with pytest.raises(DataError, match=r"format_version 99 is not 1"):
        load_manifest(tmp_path, "half")


def test_file_level_error_in_a_later_split_stops_before_any_work(tmp_path, register):
    consumed: list[int] = []

    def iter_records(source, split):
        if split == "test":
            raise DataError(f"{source}/test.csv is missing")
        for n in range(100):
            consumed.append(n)
            yield Record(f"r{n}", split, (), {})

    register("toy_pre", iter_records, splits=("train", "test"))
    with pytest.raises(DataError, match=r"test\.csv is missing"):
        write_dataset("toy_pre", tmp_path, tmp_path / "out", progress=False)
    assert consumed == [0]  # only the first train record was read: a cheap pre-flight
    assert list((tmp_path / "out").iterdir()) == []
