"""MedQA, MedMCQA, PubMedQA and MIMIC-III adapters on fixtures in their published formats:
shard, read back field by field, render the task, and each bad-input case."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from generalist.cli import render
from generalist.errors import DataError
from generalist.shards.manifest import read_records
from generalist.shards.writer import write_dataset


def jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def fields_of(root: Path, dataset: str, split: str) -> list[tuple[str, dict]]:
    return [(r.id, dict(r.fields)) for r in read_records(root, dataset, split)]


def rendered(capsys, *argv: str) -> str:
    assert render.main(list(argv)) == 0
    return capsys.readouterr().out


def medqa_row(n: int, answer_idx: str = "B") -> dict:
    options = {"A": f"drug a{n}", "B": f"drug b{n}", "C": f"drug c{n}", "D": f"drug d{n}"}
    return {
        "question": f"A {30 + n}-year-old man presents with fever. What is the best treatment?",
        "answer": options[answer_idx],
        "options": options,
        "meta_info": "step1",
        "answer_idx": answer_idx,
        "metamap_phrases": ["year old man", "fever"],
    }


def write_medqa(root: Path) -> Path:
    base = root / "data_clean" / "questions" / "US" / "4_options"
    for name, count in (("train", 3), ("dev", 1), ("test", 2)):
        jsonl(base / f"phrases_no_exclude_{name}.jsonl", [medqa_row(n) for n in range(count)])
    return root


def test_medqa_round_trip_and_render(tmp_path, capsys):
    source = write_medqa(tmp_path / "medqa")
    manifest = write_dataset("medqa", source, tmp_path / "shards", progress=False)
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {
        "train": 3,
        "validation": 1,
        "test": 2,
    }
    assert manifest["images_per_record"] == {"min": 0, "max": 0}
    assert fields_of(tmp_path / "shards", "medqa", "test") == [
        (
            f"medqa-test-{n + 1}",
            {
                "question": f"A {30 + n}-year-old man presents with fever. What is the best "
                "treatment?",
                "options": [f"drug a{n}", f"drug b{n}", f"drug c{n}", f"drug d{n}"],
                "answer": f"drug b{n}",
            },
        )
        for n in range(2)
    ]
    (record,) = read_records(tmp_path / "shards", "medqa", "validation")
    assert record.meta == {
        "meta_info": "step1",
        "source_file": "phrases_no_exclude_dev.jsonl",
        "line": 1,
    }
    out = rendered(capsys, "medqa", "--shards", str(tmp_path / "shards"), "--eval", "-n", "1")
    assert "Q: A 30-year-old man presents with fever." in out
    assert "Options: (A) drug a0 (B) drug b0 (C) drug c0 (D) drug d0\nA: [TARGET: drug b0]" in out


def test_medqa_bad_inputs(tmp_path):
    with pytest.raises(DataError, match=r"medqa: missing phrases_no_exclude_train\.jsonl"):
        write_dataset("medqa", tmp_path, tmp_path / "out", progress=False)
    base = tmp_path / "US" / "4_options"
    jsonl(base / "phrases_no_exclude_train.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match=r"line 1 lacks keys \['options', 'answer_idx'\]"):
        write_dataset("medqa", tmp_path, tmp_path / "out", splits=["train"], progress=False)
    bad = medqa_row(1)
    bad["answer_idx"] = "E"
    lines = [json.dumps(medqa_row(0)), "{oops", json.dumps(bad), json.dumps(medqa_row(2))]
    (base / "phrases_no_exclude_train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"phrases_no_exclude_train\.jsonl line 2 is not valid"):
        write_dataset("medqa", tmp_path, tmp_path / "out", splits=["train"], progress=False)
    manifest = write_dataset(
        "medqa", tmp_path, tmp_path / "out", splits=["train"], skip_bad=True, progress=False
    )
    assert manifest["skipped"] == {"train": 2} and manifest["splits"]["train"]["count"] == 2
    assert "line 3: answer_idx 'E' not in ['A', 'B', 'C', 'D']" in manifest["skipped_examples"][1]


def medmcqa_row(n: int, cop: int) -> dict:
    return {
        "question": f"Drug of choice number {n}?",
        "exp": "Because.",
        "cop": cop,
        "opa": f"alpha{n}",
        "opb": f"beta{n}",
        "opc": f"gamma{n}",
        "opd": f"delta{n}",
        "subject_name": "Pharmacology",
        "topic_name": None,
        "id": f"uuid-{n}",
        "choice_type": "single",
    }


def test_medmcqa_one_based_cop_round_trip_and_render(tmp_path, capsys):
    jsonl(tmp_path / "train.json", [medmcqa_row(0, 1), medmcqa_row(1, 4)])
    jsonl(tmp_path / "dev.json", [medmcqa_row(2, 3)])
    jsonl(tmp_path / "test.json", [{k: v for k, v in medmcqa_row(3, 1).items() if k != "cop"}])
    manifest = write_dataset("medmcqa", tmp_path, tmp_path / "shards", progress=False)
    assert list(manifest["splits"]) == ["train", "validation"]  # test answers are not public
    assert fields_of(tmp_path / "shards", "medmcqa", "train") == [
        (
            "medmcqa-uuid-0",
            {
                "question": "Drug of choice number 0?",
                "options": ["alpha0", "beta0", "gamma0", "delta0"],
                "answer": "alpha0",
            },
        ),
        (
            "medmcqa-uuid-1",
            {
                "question": "Drug of choice number 1?",
                "options": ["alpha1", "beta1", "gamma1", "delta1"],
                "answer": "delta1",
            },
        ),
    ]
    (dev,) = read_records(tmp_path / "shards", "medmcqa", "validation")
    assert dev.fields["answer"] == "gamma2"
    assert dev.meta == {
        "subject_name": "Pharmacology",
        "topic_name": "",
        "choice_type": "single",
        "explanation": "Because.",
        "source_file": "dev.json",
    }
    out = rendered(capsys, "medmcqa", "--shards", str(tmp_path / "shards"), "--eval")
    assert "Q: Drug of choice number 2?\nOptions: (A) alpha2 (B) beta2 (C) gamma2" in out
    assert "[TARGET: gamma2]" in out


def test_medmcqa_bad_inputs(tmp_path):
    with pytest.raises(DataError, match=r"medmcqa: missing train\.json"):
        write_dataset("medmcqa", tmp_path, tmp_path / "out", progress=False)
    jsonl(tmp_path / "train.json", [{"question": "q", "opa": "a"}])
    with pytest.raises(DataError, match=r"line 1 lacks keys \['id', 'opb', 'opc', 'opd', 'cop'\]"):
        write_dataset("medmcqa", tmp_path, tmp_path / "out", splits=["train"], progress=False)
    jsonl(tmp_path / "train.json", [medmcqa_row(0, 2), medmcqa_row(1, 0)])
    with pytest.raises(DataError, match=r"line 2 \(id uuid-1\): cop is 0; the original release"):
        write_dataset(
            "medmcqa", tmp_path, tmp_path / "out", splits=["train"], skip_bad=True, progress=False
        )
    empty = medmcqa_row(1, 2)
    empty["opc"] = None
    jsonl(tmp_path / "train.json", [medmcqa_row(0, 2), empty, medmcqa_row(2, 7)])
    manifest = write_dataset(
        "medmcqa", tmp_path, tmp_path / "out", splits=["train"], skip_bad=True, progress=False
    )
    assert manifest["skipped"] == {"train": 2}
    assert "(id uuid-1): an option is empty" in manifest["skipped_examples"][0]
    assert "(id uuid-2): cop 7 is not 1-4" in manifest["skipped_examples"][1]


def pqal_item(n: int, decision: str) -> dict:
    return {
        "QUESTION": f"Does treatment {n} help?",
        "CONTEXTS": [f"Background {n}.", f"Results {n}."],
        "LABELS": ["BACKGROUND", "RESULTS"],
        "MESHES": ["Humans"],
        "YEAR": "2011",
        "reasoning_required_pred": decision,
        "reasoning_free_pred": decision,
        "final_decision": decision,
        "LONG_ANSWER": f"Conclusion {n}.",
    }


def write_pubmedqa(root: Path) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    items = {"101": "yes", "102": "no", "103": "maybe", "104": "no"}
    ori = {pmid: pqal_item(int(pmid), d) for pmid, d in items.items()}
    (data / "ori_pqal.json").write_text(json.dumps(ori, indent=4))
    (data / "test_ground_truth.json").write_text(json.dumps({"102": "no", "103": "maybe"}))
    return root


def test_pubmedqa_published_test_fold_round_trip_and_render(tmp_path, capsys):
    source = write_pubmedqa(tmp_path / "pubmedqa")
    manifest = write_dataset("pubmedqa", source, tmp_path / "shards", progress=False)
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 2, "test": 2}
    assert [r.id for r in read_records(tmp_path / "shards", "pubmedqa", "train")] == [
        "pubmedqa-101",
        "pubmedqa-104",
    ]
    assert fields_of(tmp_path / "shards", "pubmedqa", "test")[0] == (
        "pubmedqa-102",
        {
            "question": "Does treatment 102 help?",
            "context": "Background 102. Results 102.",
            "options": ["yes", "no", "maybe"],
            "answer": "no",
        },
    )
    record = next(read_records(tmp_path / "shards", "pubmedqa", "test"))
    assert record.meta == {
        "pmid": "102",
        "year": "2011",
        "meshes": ["Humans"],
        "long_answer": "Conclusion 102.",
    }
    out = rendered(capsys, "pubmedqa", "--shards", str(tmp_path / "shards"), "-n", "1")
    assert "Background 102. Results 102.\nQ: Does treatment 102 help?" in out
    assert "Options: (A) yes (B) no (C) maybe\nA: [TARGET: no]" in out


def test_pubmedqa_bad_inputs(tmp_path):
    with pytest.raises(DataError, match=r"pubmedqa: missing ori_pqal\.json"):
        write_dataset("pubmedqa", tmp_path, tmp_path / "out", progress=False)
    source = write_pubmedqa(tmp_path / "p")
    (source / "data" / "test_ground_truth.json").write_text('{"999": "yes"}')
    with pytest.raises(DataError, match=r"names pmids not in ori_pqal\.json: \['999'\]"):
        write_dataset("pubmedqa", source, tmp_path / "out", progress=False)
    (source / "data" / "test_ground_truth.json").write_text('{"102": "yes", "103": "maybe"}')
    manifest = write_dataset("pubmedqa", source, tmp_path / "out", skip_bad=True, progress=False)
    assert manifest["skipped"] == {"train": 0, "test": 1}
    assert "pmid 102: answer 'no' (ground truth 'yes')" in manifest["skipped_examples"][0]


MIMIC_COLUMNS = ["id", "findings", "impression", "modality", "body_part"]


def write_mimic_csv(path: Path, rows: list[list[str]], columns=MIMIC_COLUMNS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        writer.writerows(rows)


def test_mimic_iii_csv_round_trip_and_render(tmp_path, capsys):
    write_mimic_csv(
        tmp_path / "train.csv",
        [
            ["11", "No acute hemorrhage.\nVentricles normal.", "No acute process.", "CT", "head"],
            ["12", 'Small left effusion, with "trace" fluid.', "Small effusion.", "CT", "chest"],
        ],
    )
    write_mimic_csv(tmp_path / "validate.csv", [["21", "Mild edema.", "Edema.", "MR", "head"]])
    write_mimic_csv(tmp_path / "test.csv", [["31", "Clear lungs.", "Normal.", "CT", "chest"]])
    manifest = write_dataset("mimic_iii", tmp_path, tmp_path / "shards", progress=False)
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {
        "train": 2,
        "validation": 1,
        "test": 1,
    }
    assert fields_of(tmp_path / "shards", "mimic_iii", "train") == [
        (
            "mimic_iii-11",
            {
                "findings": "No acute hemorrhage.\nVentricles normal.",
                "impression": "No acute process.",
                "modality": "CT",
                "body_part": "head",
            },
        ),
        (
            "mimic_iii-12",
            {
                "findings": 'Small left effusion, with "trace" fluid.',
                "impression": "Small effusion.",
                "modality": "CT",
                "body_part": "chest",
            },
        ),
    ]
    out = rendered(
        capsys, "mimic_iii_summarization", "--shards", str(tmp_path / "shards"), "--eval"
    )
    assert "Findings: Clear lungs.\nQ: Write the impression.\nA: [TARGET: Normal.]" in out


def test_mimic_iii_clin_summ_jsonl(tmp_path):
    jsonl(tmp_path / "train.jsonl", [{"idx": 0, "inputs": "Mass in liver.", "target": "Mass."}])
    jsonl(tmp_path / "validate.jsonl", [{"idx": 1, "inputs": "Normal.", "target": "Normal."}])
    jsonl(tmp_path / "test.jsonl", [{"idx": 2, "inputs": "Stable.", "target": "No change."}])
    write_dataset("mimic_iii", tmp_path, tmp_path / "shards", progress=False)
    assert fields_of(tmp_path / "shards", "mimic_iii", "train") == [
        ("mimic_iii-0", {"findings": "Mass in liver.", "impression": "Mass."})
    ]


def test_mimic_iii_bad_inputs(tmp_path):
    with pytest.raises(
        DataError, match=r"no file for split 'train' in .*\['train\.csv\|\.jsonl'\]"
    ):
        write_dataset("mimic_iii", tmp_path, tmp_path / "out", progress=False)
    write_mimic_csv(tmp_path / "train.csv", [["a", "b"]], columns=["FINDINGS", "IMPRESSION"])
    with pytest.raises(DataError, match=r"lacks columns \['findings', 'impression'\]"):
        write_dataset("mimic_iii", tmp_path, tmp_path / "out", splits=["train"], progress=False)
    write_mimic_csv(
        tmp_path / "train.csv", [["1", "Edema.", "Edema.", "", ""], ["2", "X.", "", "", ""]]
    )
    with pytest.raises(DataError, match=r"train\.csv row 2: empty impression"):
        write_dataset("mimic_iii", tmp_path, tmp_path / "out", splits=["train"], progress=False)
    manifest = write_dataset(
        "mimic_iii", tmp_path, tmp_path / "out", splits=["train"], skip_bad=True, progress=False
    )
    assert manifest["skipped"] == {"train": 1}
    assert fields_of(tmp_path / "out", "mimic_iii", "train") == [
        ("mimic_iii-1", {"findings": "Edema.", "impression": "Edema."})
    ]
