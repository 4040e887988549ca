"""Corrupt and untrusted shards: a shard changed after writing stops `generalist train` before
any compute (sha256 vs the manifest, naming the shard and the command to re-write it); a bad
image, a pickle payload or an unknown member is a DataError naming shard and key, or, with
skip_bad, is skipped and counted.

(Covered elsewhere: a truncated tar, bad JSON and a missing member in tests/shards/test_shards.py
and tests/mixing/test_errors.py, with skip_bad and exact resume; verify_dataset in
tests/shards/test_shards.py.)
"""

from __future__ import annotations

import io
import itertools
import shutil
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from generalist.catalog.mixture import mixture_from_rates
from generalist.errors import DataError
from generalist.mixing.stream import build_stream
from generalist.train.config import load_config
from generalist.train.preflight import check_config

COLORS = mixture_from_rates("colors", {"train_colors": 1.0})
SHARD = "train-000001.tar"  # samples 10-19 of train_colors' train split
KEY = "000000012"


@pytest.fixture
def root(shard_root: Path, tmp_path: Path) -> Path:
    """A private copy of the shards that a test may damage."""
    shutil.copytree(shard_root, tmp_path / "shards")
    return tmp_path / "shards"


def rewrite(shard: Path, replace: dict[str, bytes], add: dict[str, bytes] | None = None) -> None:
    """Rewrite a tar with some members' bytes replaced and extra members after `KEY`'s."""
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for name, data in members:
            extra = [(n, d) for n, d in (add or {}).items()] if name == f"{KEY}.json" else []
            for member_name, content in [(name, replace.get(name, data)), *extra]:
                info = tarfile.TarInfo(member_name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))


def test_changed_shard_stops_training_before_compute(root, tmp_path, cli, config_dict) -> None:
    shard = root / "train_colors" / SHARD
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit inside a member: the tar still reads
    shard.write_bytes(bytes(data))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(config_dict(root, tmp_path / "run")))
    start = time.time()
    result = cli("train", str(config))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "error" in x]
    assert str(shard) in line and "sha256" in line and "generalist shard train_colors" in line
    assert time.time() - start < 30 and not (tmp_path / "run").exists()  # nothing was computed
    # the off switch, for datasets too large to hash at every start
    assert check_config(load_config(config, ["verify_shards=false"]))


def read_all(root: Path, skip_bad: bool = False):
    stream = build_stream(COLORS, root, "train", seed=0, skip_bad=skip_bad)
    return stream, [e.id for e in itertools.islice(iter(stream), 48)]  # every record, twice


DAMAGE = {
    "bad image bytes": ({f"{KEY}.0.png": b"\x89PNG but not really"}, {}, "is not a PNG image"),
    "pickle member": ({}, {f"{KEY}.1.pickle": b"\x80\x04cos\nsystem\n."}, "is a pickle"),
    "pth member": ({}, {f"{KEY}.pth": b"\x80\x04."}, "is a pickle"),
    "unknown member": ({}, {f"{KEY}.txt": b"hello"}, "is not allowed"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_bad_member_names_shard_and_key_or_is_skipped(root: Path, damage: str) -> None:
    replace, add, message = DAMAGE[damage]
    rewrite(root / "train_colors" / SHARD, replace, add)
    with pytest.raises(DataError, match=rf"{SHARD} sample {KEY}: member {KEY}\.\S+ {message}"):
        read_all(root)
    with pytest.warns(UserWarning, match=rf"skipped bad sample: .*{SHARD} sample {KEY}"):
        stream, ids = read_all(root, skip_bad=True)
    assert len(ids) == 48 and "train-c12" not in ids and "train-c13" in ids
    assert stream.skipped == 2  # counted: met once per epoch


def test_skip_bad_in_training_counts_every_workers_skips(
    root, shard_root, tmp_path, cli, config_dict
):
    """skip_bad with 2 DataLoader workers: the training log's data/skipped_samples counts the
    bad samples met inside the workers, as often as the bad record's position came up."""
    import json
    import re

    config = tmp_path / "run.yaml"
    overrides = {"steps": 4, "skip_bad": True, "num_workers": 2, "verify_shards": False}
    config.write_text(yaml.safe_dump(config_dict(root, tmp_path / "run", **overrides)))
    cfg = load_config(config)
    mixture = check_config(cfg)
    window = cfg.batch.micro_batch_size * cfg.batch.group_by_length  # one window: 2 steps
    clean = build_stream(mixture, shard_root, "train", cfg.seed, batch_size=window, num_workers=2)
    windows = [[e.id for e in w] for w in itertools.islice(iter(clean.dataloader()), 2)]
    bad = next(i for i in windows[0] if i.startswith("train-c"))  # a colour record, read early
    index = int(re.search(r"(\d+)$", bad).group(1))
    shard = root / "train_colors" / f"train-{index // 10:06d}.tar"
    rewrite(shard, {f"{index:09d}.json": b"{not json"})
    result = cli("train", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    skipped = [json.loads(line)["data/skipped_samples"] for line in lines]
    first, both = windows[0].count(bad), windows[0].count(bad) + windows[1].count(bad)
    assert first >= 1 and skipped == [first, first, both, both], (bad, windows, skipped)


BOMB_KEY = "000000015"


def damage_pixels(root: Path, damage_image) -> tuple[Path, dict[str, str]]:
    """Sample KEY of SHARD gets undecodable pixels, sample BOMB_KEY a decompression bomb; the
    shard's tar and sample checks still pass. Returns the shard and {record id: key}."""
    shard = root / "train_colors" / SHARD
    damage_image(shard, KEY, "pixels")
    damage_image(shard, BOMB_KEY, "bomb")
    return shard, {"train-c12": KEY, "train-c15": BOMB_KEY}


def test_undecodable_pixels_and_bombs_name_shard_and_key_or_drop_with_exact_resume(
    root, shard_root, tmp_path, config_dict, damage_image
) -> None:
    """Through the training data path (setup_data: preflight, stream, length-grouped windows,
    the collator): pixels that fail to decode and a decompression bomb stop with one line naming
    shard and key; with skip_bad both examples are dropped from their micro-batches, counted in
    data/skipped_samples and named in warnings, every other example arrives as in a clean run,
    and a resume from any position after (or inside the window of) a bad sample continues
    exactly."""
    import warnings

    import torch

    from generalist.train.config import TrainConfig
    from generalist.train.setup import setup_data, setup_model
    from generalist.train.step import data_metrics

    shard, bad = damage_pixels(root, damage_image)

    def run(shards: Path, skip_bad: bool) -> tuple[TrainConfig, object]:
        overrides = {"skip_bad": skip_bad, "verify_shards": False}
        cfg = TrainConfig.model_validate(config_dict(shards, tmp_path / "run", **overrides))
        return cfg, check_config(cfg)

    cfg, mixture = run(shard_root, False)
    bundle = setup_model(cfg, mixture)
    steps = 24  # 96 examples: every colour record about twice

    def batches(cfg: TrainConfig, shards: Path, start=None, n: int = steps):
        stream, it = setup_data(cfg.model_copy(update={"shards": shards}), mixture, bundle, start)
        return stream, list(itertools.islice(it, n))

    _, clean = batches(cfg, shard_root)
    met = [i for m in clean for i in m.batch["example_ids"] if i in bad]
    assert set(met) == set(bad)  # both bad records come up in the run

    # without skip_bad: the first bad example met stops, in one line naming shard and key
    first = bad[met[0]]
    with pytest.raises(DataError) as err:
        batches(cfg, root)
    (line,) = str(err.value).splitlines()
    assert line.startswith(f"shard {shard} sample {first}: task 'train_colors' example ")
    assert ("cannot be decoded" if first == KEY else "above model.max_image_pixels") in line

    # with skip_bad: dropped, counted and named; everything else as in the clean run
    cfg, _ = run(root, True)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        stream, skipped = batches(cfg, root)
    lines = [str(w.message) for w in seen if "skipped bad sample" in str(w.message)]
    assert len(lines) == len(met) == stream.skipped
    for record, key in bad.items():
        where = f"shard {shard} sample {key}: task 'train_colors' example '{record}': image 0 "
        assert sum(where in x for x in lines) == met.count(record)
    assert all("cannot be decoded" in x for x in lines if f"sample {KEY}:" in x)
    assert all("20000 x 20000 = 400,000,000 pixels" in x for x in lines if BOMB_KEY in x)
    assert data_metrics(stream, True, torch.device("cpu"))["data/skipped_samples"] == len(met)
    # a window (2 micro-batches here) is regrouped by length without its bad examples
    for n in range(0, steps, 2):
        got = [i for m in skipped[n : n + 2] for i in m.batch["example_ids"]]
        want = [i for m in clean[n : n + 2] for i in m.batch["example_ids"] if i not in bad]
        assert sorted(got) == sorted(want)

    # resume exactness: from the positions before, inside and after the first drop's window
    at = next(n for n, m in enumerate(clean) if set(m.batch["example_ids"]) & set(bad))
    for n in range(max(0, at - 1), min(at + 3, steps - 2)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            again, resumed = batches(cfg, root, skipped[n].position, steps - n - 1)
        assert again.skipped == stream.skipped  # the count resumes exactly too
        for a, b in zip(resumed, skipped[n + 1 :]):
            assert a.batch["example_ids"] == b.batch["example_ids"]
            assert torch.equal(a.batch["input_ids"], b.batch["input_ids"])
            assert torch.equal(a.batch["pixel_values"], b.batch["pixel_values"])
