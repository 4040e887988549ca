"""PAD-UFES-20 adapter on a fixture laid out like the Mendeley download."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from generalist.tasks.pad_ufes import split_of

from generalist.catalog.records import BadRecord
from generalist.errors import DataError

HEADER = [
    "patient_id",
    "lesion_id",
    "smoke",
    "drink",
    "background_father",
    "background_mother",
    "age",
    "pesticide",
    "gender",
    "skin_cancer_history",
    "cancer_history",
    "has_piped_water",
    "has_sewage_system",
    "fitspatrick",
    "region",
    "diameter_1",
    "diameter_2",
    "diagnostic",
    "itch",
    "grew",
    "hurt",
    "changed",
    "bleed",
    "elevation",
    "img_id",
    "biopsed",
]
ROWS = [  # PAT_46 and PAT_1516 hash to train, PAT_16 to validation, PAT_12 to test
    "PAT_46,881,False,False,POMERANIA,POMERANIA,55,False,FEMALE,True,True,True,True,3.0,NECK,"
    "6.0,5.0,BCC,True,True,False,True,True,True,PAT_46_881_939.png,True",
    "PAT_1516,1765,,,,,8,,,,,,,,ARM,,,NEV,False,False,False,False,False,False,"
    "PAT_1516_1765_530.png,False",
    "PAT_46,882,False,False,POMERANIA,POMERANIA,55,False,FEMALE,True,True,True,True,3.0,FACE,"
    "4.0,4.0,ACK,UNK,UNK,False,UNK,False,True,PAT_46_882_940.png,False",
    "PAT_16,30,False,True,GERMANY,ITALY,71,True,MALE,False,False,True,False,2.0,CHEST,"
    "15.0,10.0,MEL,False,True,True,True,False,True,PAT_16_30_61.png,True",
    "PAT_12,900,False,False,BRAZIL,BRAZIL,62,False,MALE,True,False,True,True,1.0,BACK,"
    "12.0,9.0,SCC,True,True,True,True,True,True,PAT_12_900_1.png,True",
]


@pytest.fixture
def pad(tmp_path, helpers) -> Path:
    root = tmp_path / "pad-ufes-20"
    root.mkdir()
    with (root / "metadata.csv").open("w", newline="") as handle:
        handle.write(",".join(HEADER) + "\n" + "\n".join(ROWS) + "\n")
    for n, row in enumerate(ROWS):
        folder = root / "images" / f"imgs_part_{n % 3 + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / row.split(",")[-2]).write_bytes(helpers.image_bytes(n))
    return root


def test_records_field_by_field(pad, helpers) -> None:
    train = helpers.good(helpers.records_of("pad_ufes_20", pad, "train"))
    assert [r.id for r in train] == ["PAT_46_881_939", "PAT_1516_1765_530", "PAT_46_882_940"]
    assert dict(train[0].fields) == {
        "label": "Basal Cell Carcinoma",
        "diagnostic": "BCC",
        "history": "Age: 55, Gender: female, Smoke: false, Drink: false, Background father: "
        "pomerania, Background mother: pomerania, Pesticide: false, Skin cancer history: true, "
        "Cancer history: true, Piped water: true, Sewage system: true, Fitzpatrick skin type: 3, "
        "Region: neck, Diameter 1 (mm): 6, Diameter 2 (mm): 5, Itch: true, Grew: true, "
        "Hurt: false, Changed: true, Bleed: true, Elevation: true",
    }
    assert train[1].fields["history"] == (
        "Age: 8, Region: arm, Itch: false, Grew: false, Hurt: false, Changed: false, "
        "Bleed: false, Elevation: false"
    )
    assert "Itch" not in train[2].fields["history"]  # UNK left out
    assert dict(train[0].meta) == {
        "patient_id": "PAT_46",
        "lesion_id": "881",
        "img_id": "PAT_46_881_939.png",
        "biopsed": "True",
    }
    assert train[1].images == (helpers.image_bytes(1),)
    (valid,) = helpers.good(helpers.records_of("pad_ufes_20", pad, "validation"))
    (test,) = helpers.good(helpers.records_of("pad_ufes_20", pad, "test"))
    assert (valid.fields["label"], test.fields["label"]) == ("Melanoma", "Squamous Cell Carcinoma")


def test_patient_split_is_stable_and_about_70_10_20() -> None:
    assert [split_of(p) for p in ("PAT_46", "PAT_1516", "PAT_16", "PAT_12")] == [
        "train",
        "train",
        "validation",
        "test",
    ]
    counts = Counter(split_of(f"PAT_{i}") for i in range(5000))
    assert abs(counts["train"] / 5000 - 0.7) < 0.03
    assert abs(counts["validation"] / 5000 - 0.1) < 0.02
    assert abs(counts["test"] / 5000 - 0.2) < 0.03


def test_bad_rows_name_file_and_line(pad, helpers) -> None:
    rows = [*ROWS]
    rows[1] = rows[1].replace(",NEV,", ",XYZ,")
    (pad / "metadata.csv").write_text(",".join(HEADER) + "\n" + "\n".join(rows) + "\n")
    next(pad.rglob("PAT_46_882_940.png")).unlink()
    next(pad.rglob("PAT_46_881_939.png")).write_bytes(b"\x89PNG broken")
    items = helpers.records_of("pad_ufes_20", pad, "train")
    assert all(isinstance(i, BadRecord) for i in items)
    messages = [str(i) for i in items]
    assert "metadata.csv line 2: " in messages[0] and "does not decode" in messages[0]
    assert "metadata.csv line 3: diagnostic 'XYZ' is not one of ['BCC', 'MEL'" in messages[1]
    assert "metadata.csv line 4: image 'PAT_46_882_940.png' is not under" in messages[2]


def test_missing_file_and_column(tmp_path, helpers) -> None:
    with pytest.raises(DataError, match=r"pad_ufes_20: missing .*metadata\.csv; --source is"):
        helpers.records_of("pad_ufes_20", tmp_path, "train")
    with (tmp_path / "metadata.csv").open("w", newline="") as handle:
        csv.writer(handle).writerow([c for c in HEADER if c != "diagnostic"])
    with pytest.raises(DataError, match=r"metadata\.csv lacks column\(s\) \['diagnostic'\]"):
        helpers.records_of("pad_ufes_20", tmp_path, "train")


def test_shard_round_trip_and_render(pad, tmp_path, helpers) -> None:
    back = helpers.round_trip(
        "pad_ufes_20", "pad_ufes_20", pad, tmp_path / "shards", ["train", "validation", "test"]
    )
    assert [len(back[s]) for s in ("train", "validation", "test")] == [3, 1, 1]


def test_cli_shard_skip_bad_then_render(pad, tmp_path, capsys) -> None:
    from generalist.cli import main
    from generalist.shards.manifest import load_manifest

    rows = [ROWS[0], ROWS[1].replace(",NEV,", ",XYZ,"), *ROWS[2:]]
    (pad / "metadata.csv").write_text(",".join(HEADER) + "\n" + "\n".join(rows) + "\n")
    out = tmp_path / "shards"
    args = ["shard", "pad_ufes_20", "--source", str(pad), "--out", str(out), "--no-progress"]
    assert main(args) == 2  # the bad row stops the run, naming file and line
    assert "metadata.csv line 3: diagnostic 'XYZ'" in capsys.readouterr().err
    assert main([*args, "--skip-bad"]) == 0
    manifest = load_manifest(out, "pad_ufes_20")
    assert manifest["skipped"]["train"] == 1
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {
        "train": 2,
        "validation": 1,
        "test": 1,
    }
    capsys.readouterr()
    assert main(["render", "pad_ufes_20", "--shards", str(out), "-n", "1", "--eval"]) == 0
    shown = capsys.readouterr().out
    assert "Given <image>. Patient History: Age: 62, Gender: male" in shown
    assert "(F) Nevus\nA: [TARGET: Squamous Cell Carcinoma]" in shown
