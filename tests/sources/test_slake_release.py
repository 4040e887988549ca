"""Slake as its authors publish it: Slake1.0 (validate.json + the unzipped imgs/ tree) and the
hub copy BoKelvin/SLAKE (validation.json + imgs.zip read in place), English by default and
both languages with option language=all."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from generalist import cli
from generalist.catalog.records import DATASETS, BadRecord
from generalist.errors import ConfigError, DataError
from generalist.shards.manifest import load_manifest, read_records

# split -> (img_id, question, answer, q_lang, answer_type, qid), interleaved as published
ROWS = {
    "train": [
        (0, "What modality is used to take this image?", "MRI", "en", "OPEN", 0),
        (0, "这张图片的成像方式是什么?", "核磁共振", "zh", "OPEN", 1),
        (0, "Does the picture contain liver?", "Yes", "en", "CLOSED", 2),
        (1, "Which is bigger in this image, the heart or the lung?", "Lung", "en", "CLOSED", 3),
        (1, "肺部看起来健康吗?", "否", "zh", "CLOSED", 4),
    ],
    "validation": [
        (2, "Where is the liver?", "Left", "en", "OPEN", 5),
        (2, "肝脏在哪里?", "左侧", "zh", "OPEN", 6),
    ],
    "test": [(3, "Is this a CT scan?", "No", "en", "CLOSED", 7)],
}


def row(img_id: int, question: str, answer: str, lang: str, kind: str, qid: int) -> dict:
    return {
        "img_id": img_id,
        "img_name": f"xmlab{img_id}/source.jpg",
        "question": question,
        "answer": answer,
        "q_lang": lang,
        "location": "Abdomen",
        "modality": "MRI",
        "answer_type": kind,
        "base_type": "vqa",
        "content_type": "Modality",
        "triple": ["vhead", "_", "_"],
        "qid": qid,
    }


def image_files(helpers, img_id: int) -> dict[str, bytes]:
    """What each imgs/xmlab<N>/ folder holds: the image, its mask, detections, questions."""
    return {
        "source.jpg": helpers.image_bytes(40 + img_id, fmt="JPEG"),
        "mask.png": helpers.image_bytes(200 + img_id),
        "detection.json": json.dumps([{"Liver": [10, 20, 30, 40]}]).encode(),
        "question.json": b"[]",
    }


def write_release(root: Path, helpers, hub: bool) -> Path:
    """Slake1.0 as Slake.zip unzips (validate.json, imgs/), or BoKelvin/SLAKE (validation.json,
    imgs.zip holding imgs/...)."""
    root.mkdir(parents=True)
    for split, rows in ROWS.items():
        name = "validate" if split == "validation" and not hub else split
        (root / f"{name}.json").write_text(json.dumps([row(*r) for r in rows], ensure_ascii=False))
    (root / "mask.txt").write_text("1:Liver\n2:Kidney\n")
    if hub:
        with zipfile.ZipFile(root / "imgs.zip", "w") as archive:
            for img_id in range(4):
                for name, data in image_files(helpers, img_id).items():
                    archive.writestr(f"imgs/xmlab{img_id}/{name}", data)
        (root / "KG.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    else:
        for img_id in range(4):
            folder = root / "imgs" / f"xmlab{img_id}"
            folder.mkdir(parents=True)
            for name, data in image_files(helpers, img_id).items():
                (folder / name).write_bytes(data)
        (root / "KG").mkdir()
        (root / "KG" / "en_organ.csv").write_text("organ\nliver\n")
    return root


@pytest.fixture
def official(tmp_path, helpers) -> Path:
    return write_release(tmp_path / "download" / "Slake1.0", helpers, hub=False)


@pytest.fixture
def hub(tmp_path, helpers) -> Path:
    return write_release(tmp_path / "SLAKE", helpers, hub=True)


def records(source: Path, split: str, **options: str) -> list:
    return list(DATASETS.get("slake_vqa").records(source, split, options))


def test_official_release_english_by_default_case_and_types_as_published(official, helpers) -> None:
    train = helpers.good(records(official.parent, "train"))  # the folder holding Slake1.0/
    assert [r.id for r in train] == ["train-0", "train-2", "train-3"]
    assert [dict(r.fields) for r in train] == [
        {"question": "What modality is used to take this image?", "answer": "MRI",
         "answer_type": "open"},
        {"question": "Does the picture contain liver?", "answer": "Yes", "answer_type": "closed"},
        {"question": "Which is bigger in this image, the heart or the lung?", "answer": "Lung",
         "answer_type": "closed"},  # CLOSED as published, though not a yes/no answer
    ]  # fmt: skip
    assert train[0].images == (helpers.image_bytes(40, fmt="JPEG"),)  # source.jpg, not mask.png
    assert train[2].images == (helpers.image_bytes(41, fmt="JPEG"),)
    assert dict(train[1].meta) == {
        "source_file": "train.json",
        "row": 2,
        "qid": 2,
        "img_id": 0,
        "img_name": "xmlab0/source.jpg",
        "q_lang": "en",
        "location": "Abdomen",
        "modality": "MRI",
        "content_type": "Modality",
        "base_type": "vqa",
        "published_answer_type": "closed",
    }
    (valid,) = helpers.good(records(official, "validation"))  # read from validate.json
    assert (valid.id, valid.meta["source_file"]) == ("validation-5", "validate.json")


def test_hub_copy_reads_imgs_zip_in_place_and_both_languages(hub, helpers) -> None:
    train = helpers.good(records(hub, "train", language="all"))
    assert [r.id for r in train] == [f"train-{i}" for i in range(5)]
    assert [r.fields["answer"] for r in train] == ["MRI", "核磁共振", "Yes", "Lung", "否"]
    assert train[4].fields["answer_type"] == "closed" and train[4].meta["q_lang"] == "zh"
    assert train[1].images == train[0].images == (helpers.image_bytes(40, fmt="JPEG"),)
    chinese = helpers.good(records(hub, "validation", language="zh"))
    assert [(r.id, r.fields["question"]) for r in chinese] == [("validation-6", "肝脏在哪里?")]
    assert [r.id for r in helpers.good(records(hub, "validation"))] == ["validation-5"]
    assert not (hub / "imgs").exists()  # the zip was not unzipped


def test_language_option_through_the_shard_cli_and_manifest(hub, tmp_path, capsys) -> None:
    out = tmp_path / "shards"
    argv = ["shard", "slake_vqa", "--source", str(hub), "--out", str(out), "--no-progress"]
    assert cli.main([*argv, "--option", "language=all"]) == 0
    manifest = load_manifest(out, "slake_vqa")
    assert manifest["options"] == {"language": "all"}
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {
        "train": 5,
        "validation": 2,
        "test": 1,
    }
    stored = list(read_records(out, "slake_vqa", "validation"))
    assert [r.fields["answer"] for r in stored] == ["Left", "左侧"]
    capsys.readouterr()
    assert cli.main([*argv, "--option", "lang=all"]) == 2
    err = capsys.readouterr().err
    assert "dataset 'slake_vqa' has no option 'lang'; did you mean 'language'?" in err
    assert cli.main([*argv, "--option", "language=fr"]) == 2
    assert "slake_vqa: option language='fr' is not one of en, zh, all" in capsys.readouterr().err
    assert cli.main([*argv, "--option", "language"]) == 2
    assert "--option 'language': expected NAME=VALUE" in capsys.readouterr().err
    render = ["render", "slake_vqa", "--source", str(hub), "--split", "validation", "-n", "1"]
    assert cli.main([*render, "--option", "language=zh"]) == 0
    assert "Q: 肝脏在哪里?\nA:" in capsys.readouterr().out
    vqa_rad = ["shard", "vqa_rad", "--source", str(hub), "--out", str(out)]
    assert cli.main([*vqa_rad, "--option", "language=all"]) == 2
    assert "dataset 'vqa_rad' takes no options; got 'language'" in capsys.readouterr().err


def test_round_trip_and_render_from_the_official_release(official, tmp_path, helpers) -> None:
    splits = ["train", "validation", "test"]
    back = helpers.round_trip("slake_vqa", "slake_vqa", official, tmp_path / "out", splits)
    assert [len(back[s]) for s in splits] == [3, 1, 1]


def test_missing_images_and_files_name_them(official, hub, helpers) -> None:
    (hub / "test.json").unlink()
    with pytest.raises(DataError, match=r"slake_vqa: missing .*SLAKE/test\.json; the Slake rel"):
        records(hub, "test")
    with zipfile.ZipFile(hub / "imgs.zip", "w") as archive:  # xmlab1 left out of the zip
        archive.writestr("imgs/xmlab0/source.jpg", helpers.image_bytes(40, fmt="JPEG"))
    items = records(hub, "train")
    assert [type(i).__name__ for i in items] == ["Record", "Record", "BadRecord"]
    assert str(items[2]) == (
        f"slake_vqa: {hub / 'train.json'} record 3: xmlab1/source.jpg is not in {hub / 'imgs.zip'}"
    )
    (official / "imgs" / "xmlab3" / "source.jpg").write_bytes(b"\xff\xd8\xff truncated")
    (bad,) = records(official, "test")
    assert isinstance(bad, BadRecord) and "record 0: " in str(bad)
    assert "xmlab3/source.jpg: image does not decode" in str(bad)
    for name in ("imgs.zip", "KG.zip"):
        (hub / name).unlink()
    with pytest.raises(DataError, match=r"neither .*SLAKE/imgs/ nor .*SLAKE/imgs\.zip exists"):
        records(hub, "train")


def test_malformed_json_is_named(official) -> None:
    path = official / "train.json"
    path.write_text(json.dumps({"0": row(*ROWS["train"][0])}))
    with pytest.raises(DataError, match=r"train\.json is a JSON dict, not the array of question"):
        records(official, "train")
    path.write_text(json.dumps([{"img_id": 0, "question": "q"}]))
    with pytest.raises(DataError, match=r"record 0 lacks keys \['img_name', 'answer'\]"):
        records(official, "train")
    rows = [row(*ROWS["train"][0]), {**row(*ROWS["train"][2]), "answer": None}]
    rows += [{k: v for k, v in row(*ROWS["train"][3]).items() if k != "answer"}]
    rows += [{**row(*ROWS["train"][3]), "img_name": "../../etc/passwd"}]
    path.write_text(json.dumps(rows))
    items = records(official, "train")
    assert [str(i).split("record ")[-1] for i in items[1:]] == [
        "1: empty question or answer",
        "2 lacks keys ['answer']",
        "3: img_name '../../etc/passwd' is not a path below imgs/",
    ]
    with pytest.raises(ConfigError, match=r"'slake_vqa' has no option 'languages'; did you mean"):
        records(official, "train", languages="all")
