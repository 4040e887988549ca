"""MedMNIST (.npz) and easy-vqa (its PyPI package) adapters: shard, read back, render."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from generalist.tasks.easy_vqa import iter_questions, package_source
from generalist.tasks.medmnist import MEDMNIST_LABELS
from PIL import Image

from generalist.cli import render
from generalist.errors import DataError
from generalist.shards.manifest import read_records
from generalist.shards.writer import write_dataset


def write_npz(path: Path, channels: int | None, labels: dict[str, list[int]], seed: int = 0):
    """A MedMNIST-format .npz: <split>_images uint8 (N,28,28[,3]), <split>_labels (N,1)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, values in labels.items():
        shape = (len(values), 28, 28) + ((channels,) if channels else ())
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array(values, dtype=np.uint8).reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return arrays


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_medmnist_gray_and_rgb_round_trip_and_render(tmp_path, capsys):
    gray = write_npz(
        tmp_path / "pneumoniamnist.npz", None, {"train": [0, 1, 1], "val": [1], "test": [0, 1]}
    )
    rgb = write_npz(
        tmp_path / "dermamnist.npz", 3, {"train": [4, 6], "val": [0], "test": [5]}, seed=1
    )
    root = tmp_path / "shards"
    manifest = write_dataset("pneumoniamnist", tmp_path, root, image_size=28, progress=False)
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {
        "train": 3,
        "validation": 1,
        "test": 2,
    }
    assert manifest["fields"] == {"label": "string", "label_index": "integer"}
    records = list(read_records(root, "pneumoniamnist", "train"))
    assert [(r.id, r.fields["label"]) for r in records] == [
        ("pneumoniamnist-train-0", "normal"),
        ("pneumoniamnist-train-1", "pneumonia"),
        ("pneumoniamnist-train-2", "pneumonia"),
    ]
    assert records[1].meta == {"index": 1, "source_file": "pneumoniamnist.npz"}
    stored = pixels(records[2].images[0])
    assert stored.shape == (28, 28, 3)  # grayscale stored as 3 equal channels, same pixels
    assert (stored[..., 0] == gray["train_images"][2]).all()
    assert (stored[..., 2] == gray["train_images"][2]).all()

    write_dataset("dermamnist", tmp_path / "dermamnist.npz", root, image_size=28, progress=False)
    (val,) = read_records(root, "dermamnist", "validation")
    assert val.fields == {
        "label": "actinic keratoses and intraepithelial carcinoma",
        "label_index": 0,
    }
    assert (pixels(val.images[0]) == rgb["val_images"][0]).all()

    out = capsys.readouterr() and render.main(
        ["dermamnist", "--shards", str(root), "--eval", "-n", "1"]
    )
    assert out == 0
    text = capsys.readouterr().out
    names = MEDMNIST_LABELS["dermamnist"][1]
    assert "Given <image>. Q: What is the class of the image?" in text
    assert f"(G) {names[6]}\nA: [TARGET: {names[5]}]" in text


def test_medmnist_sized_file_and_upscaling(tmp_path):
    write_npz(tmp_path / "breastmnist_64.npz", None, {"train": [0], "val": [1], "test": [1]})
    write_dataset("breastmnist", tmp_path, tmp_path / "out", image_size=56, progress=False)
    (record,) = read_records(tmp_path / "out", "breastmnist", "test")
    assert record.fields["label"] == "normal, benign"
    assert pixels(record.images[0]).shape == (56, 56, 3)


def test_medmnist_bad_inputs(tmp_path):
    with pytest.raises(DataError, match=r"pathmnist: missing .*pathmnist\.npz; download"):
        write_dataset("pathmnist", tmp_path, tmp_path / "out", progress=False)
    write_npz(tmp_path / "octmnist.npz", None, {"train": [0, 9, 3], "test": [1]})
    with pytest.raises(
        DataError, match=r"octmnist\.npz train_labels row 1: label 9 outside 0\.\.3"
    ):
        write_dataset("octmnist", tmp_path, tmp_path / "out", splits=["train"], progress=False)
    manifest = write_dataset(
        "octmnist", tmp_path, tmp_path / "out", splits=["train"], skip_bad=True, progress=False
    )
    assert manifest["skipped"] == {"train": 1} and manifest["splits"]["train"]["count"] == 2
    with pytest.raises(DataError, match=r"no array 'val_images'; MedMNIST \.npz files have"):
        write_dataset("octmnist", tmp_path, tmp_path / "out", splits=["validation"])
    np.savez(tmp_path / "bloodmnist.npz", train_images=np.array([{"x": 1}], dtype=object))
    with pytest.raises(DataError, match=r"'train_images' is not a plain C-ordered numeric array"):
        write_dataset("bloodmnist", tmp_path, tmp_path / "out", splits=["train"])
    (tmp_path / "retinamnist.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"retinamnist\.npz is not a readable \.npz"):
        write_dataset("retinamnist", tmp_path, tmp_path / "out")


def test_easy_vqa_package_data_round_trip_and_render(tmp_path, capsys):
    root = tmp_path / "shards"
    manifest = write_dataset("easy_vqa", None, root, image_size=32, limit=6, progress=False)
    assert manifest["source"] == str(package_source())
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {
        "train": 6,
        "validation": 6,
        "test": 6,
    }
    published = json.loads((package_source() / "test" / "questions.json").read_text())
    back = list(read_records(root, "easy_vqa", "test"))
    for n, record in enumerate(back):
        question, answer, image_id = published[n]
        assert record.id == f"test-q{n}"
        assert (record.fields["question"], record.fields["answer"]) == (question, answer)
        assert record.meta["image_id"] == image_id
        assert pixels(record.images[0]).shape == (32, 32, 3)
    expected = [r.fields for r in iter_questions(package_source(), "validation")][:6]
    assert [r.fields for r in read_records(root, "easy_vqa", "validation")] == expected
    assert render.main(["easy_vqa", "--shards", str(root), "--eval", "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert f"Given <image>. Q: {published[0][0]}\nA: [TARGET: {published[0][1]}]" in out
