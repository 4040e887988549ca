"""Errors before training starts, and bad samples (error naming shard and key, or skip)."""

from __future__ import annotations

import io
import itertools
import shutil
import tarfile
import warnings
from pathlib import Path

import pytest

from generalist.catalog.mixture import mixture_from_rates
from generalist.errors import ConfigError, DataError
from generalist.mixing.stream import build_stream

ONE = mixture_from_rates("one", {"st_task_few": 1.0})


@pytest.fixture
def root(shard_root: Path, tmp_path: Path) -> Path:
    """A private copy of the shards that a test may damage."""
    shutil.copytree(shard_root, tmp_path / "shards")
    return tmp_path / "shards"


def test_unknown_task_names_close_matches(shard_root: Path) -> None:
    mix = mixture_from_rates("typo", {"st_task_fwe": 1.0})
    with pytest.raises(
        ConfigError, match=r"mixture 'typo': unknown task 'st_task_fwe'.*st_task_few"
    ):
        build_stream(mix, shard_root)


def test_evaluation_only_task_in_a_training_mixture(shard_root: Path) -> None:
    mix = mixture_from_rates("m", {"st_eval_only": 1.0, "st_task_few": 1.0})
    with pytest.raises(ConfigError, match="'st_eval_only' is evaluation-only"):
        build_stream(mix, shard_root)


def test_missing_dataset_names_path_and_command(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        build_stream(ONE, tmp_path)
    message = str(err.value)
    assert "task 'st_task_few'" in message and str(tmp_path / "st_few") in message
    assert f"`generalist shard st_few --out {tmp_path}`" in message


def test_incomplete_dataset_without_manifest(root: Path) -> None:
    (root / "st_few" / "manifest.json").unlink()
    with pytest.raises(DataError, match=r"st_few.* is incomplete.*generalist shard st_few"):
        build_stream(ONE, root)


def test_missing_split_and_missing_shard_file(root: Path) -> None:
    with pytest.raises(DataError, match="has no split 'test'"):
        build_stream(ONE, root, "test")
    (root / "st_few" / "train-000001.tar").unlink()
    with pytest.raises(DataError, match=r"shard .*train-000001.tar of dataset 'st_few'.*missing"):
        build_stream(ONE, root)


def test_geometry_errors(shard_root: Path) -> None:
    tiny = mixture_from_rates("tiny", {"st_task_tiny": 1.0})
    # 30 records, 31 ranks: readers take turns, the last rank reads record 30 mod 30 = 0
    assert next(iter(build_stream(tiny, shard_root, rank=30, world_size=31))).task == "st_task_tiny"
    with pytest.raises(ConfigError, match="needs batch_size"):
        build_stream(tiny, shard_root, num_workers=2)
    with pytest.raises(ConfigError, match="rank must be in"):
        build_stream(tiny, shard_root, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="evaluation streams are finite"):
        build_stream(tiny, shard_root, train=False).state_dict()


def rewrite_member(shard: Path, name: str, data: bytes) -> None:
    """Replace one member of a tar (a broken JSON, say), keeping the others as they were."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for member, content in members:
            content = data if member.name == name else content
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))


def ids(stream, n: int) -> list[str]:
    return [e.id for e in itertools.islice(iter(stream), n)]


def test_bad_sample_error_names_shard_and_key(root: Path) -> None:
    shard = root / "st_few" / "train-000001.tar"
    rewrite_member(shard, "000000020.json", b"{not json")
    with pytest.raises(DataError, match=r"train-000001.tar sample 000000020: bad 000000020.json"):
        ids(build_stream(ONE, root, seed=1), 60)


def test_skip_bad_substitutes_and_keeps_resume_exact(root: Path) -> None:
    shard = root / "st_few" / "train-000001.tar"
    rewrite_member(shard, "000000020.json", b"{not json")
    with open(root / "st_few" / "train-000002.tar", "r+b") as file:
        file.truncate(3000)  # a truncated tar: the rest of that shard is bad
    clean = ids(build_stream(ONE, root, seed=1, skip_bad=True), 0)
    assert clean == []
    with pytest.warns(UserWarning, match="skipped bad sample"):
        full = ids(build_stream(ONE, root, seed=1, skip_bad=True), 120)
    assert len(full) == 120 and "st_few-train-20" not in full
    assert "st_few-train-40" not in full  # lost with the truncated part of the last shard
    with pytest.warns(UserWarning):
        stream = build_stream(ONE, root, seed=1, skip_bad=True)
        head = ids(stream, 33)
        state = stream.state_dict()
        resumed = build_stream(ONE, root, seed=1, skip_bad=True)
        resumed.load_state_dict(state)
        assert head + ids(resumed, 87) == full


@pytest.mark.parametrize("workers", [2, 0])
def test_skipped_count_includes_every_worker(shard_root: Path, root: Path, workers: int) -> None:
    """The main process's `stream.skipped` counts the bad samples the loop consumed, also those
    met inside DataLoader workers: as often as the bad record's position came up in the same
    stream over clean shards."""
    rewrite_member(root / "st_few" / "train-000001.tar", "000000020.json", b"{not json")

    def consumed(shards: Path) -> tuple[list[str], int]:
        stream = build_stream(ONE, shards, seed=1, batch_size=4, num_workers=workers, skip_bad=True)
        batches = itertools.islice(iter(stream.dataloader(collate_fn=list)), 40)
        return [e.id for batch in batches for e in batch], stream.skipped

    clean, none = consumed(shard_root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warnings themselves are covered above
        damaged, skipped = consumed(root)
    expected = clean.count("st_few-train-20")
    assert none == 0 and expected >= 2 and "st_few-train-20" not in damaged
    assert skipped == expected
