"""MIMIC-III report summarization in the MIMIC-RRS / RadSum23 release layout that Med-PaLM M
evaluates on: <pair>/{train,validate,test}.findings.tok and .impression.tok, line-aligned."""

from __future__ import annotations

from pathlib import Path

import pytest

from generalist import cli
from generalist.catalog.records import DATASETS, BadRecord
from generalist.errors import ConfigError, DataError
from generalist.shards.manifest import load_manifest, read_records

# pair -> split file stem -> [(findings, impression)], as the release writes them (tokenised)
PAIRS = {
    "CT_head": {
        "train": [
            ("no acute hemorrhage . ventricles are normal in size .", "no acute process ."),
            ("there is a 5 mm left subdural collection .", "small left subdural hematoma ."),
        ],
        "validate": [("stable chronic microvascular changes .", "no acute change .")],
        "test": [("large right mca territory infarct .", "acute right mca infarct .")],
    },
    "CT_abdomen-pelvis": {
        "train": [("the liver is enlarged with a 2 cm lesion .", "hepatic lesion , mri advised .")],
        "validate": [("the appendix is dilated to 12 mm .", "acute appendicitis .")],
        "test": [("no free air or fluid .", "no acute abdominal process .")],
    },
}  # fmt: skip


def write_pair(folder: Path, splits: dict[str, list[tuple[str, str]]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, pairs in splits.items():
        (folder / f"{stem}.findings.tok").write_text("".join(f + "\n" for f, _ in pairs))
        (folder / f"{stem}.impression.tok").write_text("".join(i + "\n" for _, i in pairs))


@pytest.fixture
def release(tmp_path) -> Path:
    """The release root: one folder per pair, plus `all` (every pair together) and a readme."""
    root = tmp_path / "mimic-iii"
    for pair, splits in PAIRS.items():
        write_pair(root / pair, splits)
    union = {
        s: [p for pair in PAIRS.values() for p in pair[s]] for s in ("train", "validate", "test")
    }
    write_pair(root / "all", union)
    (root / "README.md").write_text("MIMIC-III radiology report summarization\n")
    return root


def records(source: Path, split: str, **options: str) -> list:
    return list(DATASETS.get("mimic_iii").records(source, split, options))


def test_release_root_reads_every_pair_but_all(release, helpers) -> None:
    train = helpers.good(records(release, "train"))
    assert [r.id for r in train] == [
        "mimic_iii-CT_abdomen-pelvis-train-1",
        "mimic_iii-CT_head-train-1",
        "mimic_iii-CT_head-train-2",
    ]
    assert dict(train[0].fields) == {
        "findings": "the liver is enlarged with a 2 cm lesion .",
        "impression": "hepatic lesion , mri advised .",
        "modality": "CT",
        "body_part": "abdomen-pelvis",
    }
    assert dict(train[2].meta) == {
        "pair": "CT_head",
        "source_file": "CT_head/train.findings.tok",
        "line": 2,
    }
    assert [r.fields["impression"] for r in train[1:]] == [i for _, i in PAIRS["CT_head"]["train"]]
    valid = helpers.good(records(release, "validation"))  # validate.*.tok
    assert [r.id for r in valid] == [
        "mimic_iii-CT_abdomen-pelvis-validation-1",
        "mimic_iii-CT_head-validation-1",
    ]


def test_one_pair_folder_all_and_the_pairs_option(release, helpers) -> None:
    head = helpers.good(records(release / "CT_head", "test"))
    assert [(r.id, r.meta["pair"], r.fields["body_part"]) for r in head] == [
        ("mimic_iii-CT_head-test-1", "CT_head", "head")
    ]
    union = helpers.good(records(release / "all", "train"))
    assert [r.id for r in union] == [f"mimic_iii-all-train-{n}" for n in (1, 2, 3)]
    assert "modality" not in union[0].fields and union[0].meta["pair"] == "all"
    chosen = helpers.good(records(release, "train", pairs="CT_head"))
    assert [r.meta["pair"] for r in chosen] == ["CT_head", "CT_head"]
    assert len(helpers.good(records(release, "train", pairs="all"))) == 3
    with pytest.raises(ConfigError, match=r"no pair folder \['MR_spine'\] in .*; it has \['CT_a"):
        records(release, "train", pairs="CT_head,MR_spine")
    with pytest.raises(ConfigError, match=r"option pairs is for the release root; .*CT_head is"):
        records(release / "CT_head", "train", pairs="CT_head")
    (release.parent / "train.csv").write_text("findings,impression\nEdema.,Edema.\n")
    with pytest.raises(ConfigError, match=r"option pairs is for a MIMIC-RRS release"):
        records(release.parent, "train", pairs="CT_head")


def test_mismatched_line_counts_name_both_files_before_any_record(release) -> None:
    impression = release / "CT_head" / "train.impression.tok"
    impression.write_text(impression.read_text() + "an extra impression .\n")
    findings = release / "CT_head" / "train.findings.tok"
    with pytest.raises(DataError) as err:
        DATASETS.get("mimic_iii").records(release, "train")  # raised at the call: no record yet
    assert str(err.value) == (
        f"mimic_iii: {findings} has 2 lines but {impression} has 3; line i of one must be the "
        f"findings / impression of line i of the other"
    )
    # the other pair (read first) is fine alone
    assert len(records(release, "train", pairs="CT_abdomen-pelvis")) == 1


def test_missing_files_and_bad_lines(release) -> None:
    (release / "CT_head" / "test.impression.tok").unlink()
    with pytest.raises(DataError, match=r"missing .*CT_head/test\.impression\.tok \(split 'test'"):
        records(release, "test")
    findings = release / "CT_abdomen-pelvis" / "validate.findings.tok"
    findings.write_bytes(b"\n")  # line 1 of the findings is empty
    (bad,) = records(release / "CT_abdomen-pelvis", "validation")
    assert isinstance(bad, BadRecord)
    assert str(bad) == f"mimic_iii: {findings} / validate.impression.tok line 1: empty findings"
    findings.write_bytes(b"caf\xe9 .\n")
    (bad,) = records(release / "CT_abdomen-pelvis", "validation")
    assert "validate.impression.tok line 1: not UTF-8 (" in str(bad)


def test_shard_cli_with_pairs_option_round_trip_and_render(release, tmp_path, capsys) -> None:
    out = tmp_path / "shards"
    argv = ["shard", "mimic_iii", "--source", str(release), "--out", str(out), "--no-progress"]
    assert cli.main([*argv, "--option", "pairs=CT_head"]) == 0
    manifest = load_manifest(out, "mimic_iii")
    assert manifest["options"] == {"pairs": "CT_head"}
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {
        "train": 2,
        "validation": 1,
        "test": 1,
    }
    (test,) = read_records(out, "mimic_iii", "test")
    assert test.meta["pair"] == "CT_head"
    capsys.readouterr()
    assert cli.main(["render", "mimic_iii_summarization", "--shards", str(out), "--eval"]) == 0
    shown = capsys.readouterr().out
    assert "Findings: large right mca territory infarct .\nQ: Write the impression.\nA:" in shown
