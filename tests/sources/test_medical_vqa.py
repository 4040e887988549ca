"""VQA-RAD, Slake, Path-VQA adapters on parquet fixtures laid out like the hub copies."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generalist.catalog.records import BadRecord
from generalist.errors import DataError

VQA_RAD = {
    "train": [("Is there a fracture?", "Yes"), ("What organ is shown?", "liver")],
    "test": [("Is this an MRI?", "no")],
}


def write_hub_parquet(path: Path, rows: list[dict]) -> None:
    """As `push_to_hub` writes it: datasets' Image feature (struct {bytes, path}) + metadata."""
    import datasets

    features = {name: datasets.Value("string") for name in rows[0] if name != "image"}
    features["image"] = datasets.Image()
    path.parent.mkdir(parents=True, exist_ok=True)
    table = datasets.Dataset.from_list(rows, features=datasets.Features(features))
    table.to_parquet(str(path))


def write_plain_parquet(path: Path, rows: list[dict]) -> None:
    """A copy written with pyarrow alone: the image struct without datasets' metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture
def vqa_rad(tmp_path, helpers) -> Path:
    root = tmp_path / "vqa-rad"
    names = {
        "train": "train-00000-of-00001-eb8844602202be60.parquet",
        "test": "test-00000-of-00001-e5bc3d208bb4deeb.parquet",
    }
    for k, (split, pairs) in enumerate(VQA_RAD.items()):
        rows = [
            {
                "image": {"bytes": helpers.image_bytes(10 * k + i), "path": f"synpic{k}{i}.jpg"},
                "question": q,
                "answer": a,
            }
            for i, (q, a) in enumerate(pairs)
        ]
        write_hub_parquet(root / "data" / names[split], rows)
    return root


def test_vqa_rad_records_field_by_field(vqa_rad, helpers) -> None:
    train = helpers.good(helpers.records_of("vqa_rad", vqa_rad, "train"))
    assert [r.id for r in train] == ["train-000000", "train-000001"]
    assert [dict(r.fields) for r in train] == [
        {"question": "Is there a fracture?", "answer": "Yes", "answer_type": "closed"},
        {"question": "What organ is shown?", "answer": "liver", "answer_type": "open"},
    ]
    assert train[1].images == (helpers.image_bytes(1),)
    assert dict(train[0].meta) == {
        "source_file": "data/train-00000-of-00001-eb8844602202be60.parquet",
        "row": 0,
    }
    (test,) = helpers.good(helpers.records_of("vqa_rad", vqa_rad, "test"))
    assert (test.id, test.split, test.fields["answer_type"]) == ("test-000000", "test", "closed")


def test_path_vqa_ids_run_over_split_files_in_name_order(tmp_path, helpers) -> None:
    root = tmp_path / "path-vqa"
    for n, split in enumerate(
        ("train-00000-of-00002", "train-00001-of-00002", "test-00000-of-00001")
    ):
        rows = [
            {
                "image": {"bytes": helpers.image_bytes(n * 5 + i, fmt="JPEG"), "path": None},
                "question": f"q{n}{i}",
                "answer": "yes" if i else "h&e stain",
            }
            for i in range(2)
        ]
        write_plain_parquet(root / "data" / f"{split}-abc123.parquet", rows)
    train = helpers.good(helpers.records_of("path_vqa", root, "train"))
    assert [(r.id, r.fields["question"], r.fields["answer_type"]) for r in train] == [
        ("train-000000", "q00", "open"),
        ("train-000001", "q01", "closed"),
        ("train-000002", "q10", "open"),
        ("train-000003", "q11", "closed"),
    ]
    assert train[2].meta["source_file"] == "data/train-00001-of-00002-abc123.parquet"
    with pytest.raises(DataError, match=r"no parquet file for split 'validation'.*validation"):
        helpers.records_of("path_vqa", root, "validation")


@pytest.fixture
def slake(tmp_path, helpers) -> Path:
    root = tmp_path / "slake"
    for k, split in enumerate(("train", "validation", "test")):
        rows = [
            {
                "image": {"bytes": helpers.image_bytes(100 + 10 * k + i), "path": None},
                "question": question,
                "answer": answer,
                "q_lang": lang,
                "qid": str(1000 * k + i),
                "answer_type": kind,
            }
            for i, (question, answer, lang, kind) in enumerate(
                [
                    ("Which organ is abnormal?", "Liver", "en", "OPEN"),
                    ("图中有肝脏吗?", "是", "zh", "CLOSED"),
                    ("Is the lung healthy?", "No", "en", "CLOSED"),
                ]
            )
        ]
        write_hub_parquet(root / "data" / f"{split}-00000-of-00001.parquet", rows)
    return root


def test_slake_keeps_english_and_its_qids(slake, helpers) -> None:
    valid = helpers.good(helpers.records_of("slake_vqa", slake, "validation"))
    assert [r.id for r in valid] == ["validation-1000", "validation-1002"]
    assert [(r.fields["answer"], r.fields["answer_type"]) for r in valid] == [
        ("Liver", "open"),
        ("No", "closed"),
    ]
    assert valid[1].meta["published_answer_type"] == "closed"


def test_slake_parquet_copy_takes_the_language_option(slake) -> None:
    from generalist.catalog.records import DATASETS

    dataset = DATASETS.get("slake_vqa")
    both = list(dataset.records(slake, "validation", {"language": "all"}))
    assert [(r.id, r.fields["answer"], r.fields["answer_type"]) for r in both] == [
        ("validation-1000", "Liver", "open"),
        ("validation-1001", "是", "closed"),  # the published CLOSED; "是" is no English yes/no
        ("validation-1002", "No", "closed"),
    ]
    chinese = list(dataset.records(slake, "test", {"language": "zh"}))
    assert [r.fields["question"] for r in chinese] == ["图中有肝脏吗?"]


def test_wrong_columns_name_file_and_columns(tmp_path, helpers) -> None:
    path = tmp_path / "data" / "train-00000-of-00001.parquet"
    write_plain_parquet(path, [{"img": {"bytes": helpers.image_bytes(1), "path": None}, "q": "?"}])
    with pytest.raises(DataError, match=r"train-00000-of-00001\.parquet lacks column\(s\) "):
        helpers.records_of("vqa_rad", tmp_path, "train")


def test_bad_rows_are_bad_records_naming_file_and_row(tmp_path, helpers) -> None:
    rows = [
        {"image": {"bytes": helpers.image_bytes(1), "path": None}, "question": "q", "answer": "a"},
        {"image": {"bytes": b"not an image", "path": None}, "question": "q", "answer": "a"},
        {"image": {"bytes": None, "path": "gone.png"}, "question": "q", "answer": "a"},
        {"image": {"bytes": helpers.image_bytes(2), "path": None}, "question": "q", "answer": ""},
    ]
    write_plain_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", rows)
    items = helpers.records_of("vqa_rad", tmp_path, "train")
    assert [type(i).__name__ for i in items] == ["Record", "BadRecord", "BadRecord", "BadRecord"]
    messages = [str(i) for i in items if isinstance(i, BadRecord)]
    assert "train-00000-of-00001.parquet row 1: image does not decode" in messages[0]
    assert "row 2: image has no bytes and its path" in messages[1]
    assert "gone.png does not exist" in messages[1]
    assert messages[2].endswith("row 3: empty question or answer")


def test_unknown_split_and_missing_source(tmp_path, helpers) -> None:
    with pytest.raises(
        DataError, match=r"vqa_rad has splits \['train', 'test'\]; not 'validation'"
    ):
        helpers.records_of("vqa_rad", tmp_path, "validation")
    with pytest.raises(DataError, match=r"is not a directory"):
        helpers.records_of("vqa_rad", tmp_path / "nowhere", "train")


@pytest.mark.parametrize("dataset", ["vqa_rad", "slake_vqa"])
def test_shard_round_trip_and_render(dataset, vqa_rad, slake, tmp_path, helpers) -> None:
    source, splits = (vqa_rad, ["train", "test"]) if dataset == "vqa_rad" else (slake, None)
    splits = splits or ["train", "validation", "test"]
    back = helpers.round_trip(dataset, dataset, source, tmp_path / "shards", splits)
    assert sum(len(v) for v in back.values()) == (3 if dataset == "vqa_rad" else 6)


def test_hub_name_reads_the_hub_through_datasets(vqa_rad, monkeypatch, helpers) -> None:
    """A source that is no local path but owner/name goes to load_dataset (network only)."""
    import datasets

    calls = []
    real = datasets.load_dataset
    local = str(next((vqa_rad / "data").glob("train-*.parquet")))

    def fake(path, *args, **kwargs):
        if path == "parquet":
            return real(path, *args, **kwargs)
        calls.append((path, kwargs))
        return real("parquet", data_files={"train": [local]}, split="train", streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    train = helpers.good(helpers.records_of("vqa_rad", Path("flaviagiammarino/vqa-rad"), "train"))
    assert calls == [("flaviagiammarino/vqa-rad", {"split": "train", "streaming": True})]
    assert [r.fields["question"] for r in train] == [q for q, _ in VQA_RAD["train"]]


def test_plain_binary_image_column(tmp_path, helpers) -> None:
    rows = [{"image": helpers.image_bytes(3), "question": "Is it red?", "answer": "no"}]
    write_plain_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", rows)
    (record,) = helpers.good(helpers.records_of("vqa_rad", tmp_path, "test"))
    assert record.images == (helpers.image_bytes(3),)


def test_vqa_rad_may_reuse_train_images_in_test_but_path_vqa_may_not(tmp_path, helpers) -> None:
    from generalist.errors import DataError
    from generalist.shards.manifest import load_manifest
    from generalist.shards.writer import write_dataset

    for name, allowed in (("vqa_rad", True), ("path_vqa", False)):
        root = tmp_path / name
        shared = {"bytes": helpers.image_bytes(3), "path": "synpic3.jpg"}
        for split in ("train", "test"):
            rows = [{"image": shared, "question": f"{split} q?", "answer": "yes"}]
            write_hub_parquet(root / "data" / f"{split}-00000-of-00001.parquet", rows)
        out = tmp_path / f"{name}-shards"
        if allowed:
            write_dataset(name, root, out, splits=["train", "test"], progress=False)
            manifest = load_manifest(out, name)
            assert manifest["images_split_disjoint"] is False
            assert manifest["splits"]["test"]["count"] == 1
        else:
            with pytest.raises(DataError, match="identical to an image of record 'train-000000'"):
                write_dataset(name, root, out, splits=["train", "test"], progress=False)
