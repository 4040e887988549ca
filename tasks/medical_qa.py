"""Medical question answering (text only): MedQA (USMLE, 4 options), MedMCQA, PubMedQA.

Adapters write the standard multiple-choice fields: question, options (list), answer (the
correct option's text) and, for PubMedQA, context (the abstract without its conclusion).

Publications followed (the releases' own files, not hub re-packagings): MedQA's data_clean
(https://github.com/jind11/MedQA), MedMCQA's data.zip (https://github.com/medmcqa/medmcqa),
PubMedQA's data/ (https://github.com/pubmedqa/pubmedqa). Published formats read:
- MedQA (github.com/jind11/MedQA): `US/4_options/phrases_no_exclude_{train,dev,test}.jsonl`,
  one JSON object per line {"question", "answer", "options": {"A": ..}, "meta_info",
  "answer_idx"}. --source is that directory or any parent up to the unzipped `data_clean/`.
- MedMCQA (github.com/medmcqa/medmcqa): `{train,dev}.json`, JSON lines with id, question,
  opa..opd, cop, choice_type, exp, subject_name, topic_name. `cop` is 1-4 (1 = opa) in this
  release; the Hugging Face copy shifts it to 0-3, so a cop of 0 is refused rather than
  guessed. test.json has no answers (they are withheld), so only train and validation
  (dev.json) are sharded.
- PubMedQA (github.com/pubmedqa/pubmedqa): `data/ori_pqal.json` {pmid: {QUESTION, CONTEXTS,
  LABELS, MESHES, YEAR, final_decision, LONG_ANSWER, ...}} and `data/test_ground_truth.json`
  {pmid: answer} naming the 500 test pmids; the other 500 are our train split (exemplars).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from generalist.catalog.parts import multiple_choice_parts
from generalist.catalog.records import DATASETS, BadRecord, Dataset, Record
from generalist.catalog.task import TASKS, Task
from generalist.errors import DataError
from generalist.sources.files import first_file, json_rows, missing_keys, read_json

ADAPTER_VERSION = 1
PUBMEDQA_OPTIONS = ("yes", "no", "maybe")


def find_file(source: Path, name: str, subdirs: tuple[str, ...], dataset: str) -> Path:
    """`source/<subdir>/<name>` for the first subdir that has it; DataError if none does."""
    path = first_file(source, (Path(subdir) / name for subdir in subdirs))
    if path is not None:
        return path
    places = ", ".join(str(Path(source) / d / name) for d in subdirs)
    raise DataError(f"{dataset}: missing {name}; looked for {places}")


MEDQA_FILES = {"train": "train", "validation": "dev", "test": "test"}
MEDQA_DIRS = ("", "4_options", "US/4_options", "questions/US/4_options")


def iter_medqa(source: Path, split: str) -> Iterator[Record | BadRecord]:
    """MedQA US 4-option jsonl -> question, options (A-D order), answer (option text)."""
    name = f"phrases_no_exclude_{MEDQA_FILES[split]}.jsonl"
    path = find_file(
        source, name, MEDQA_DIRS + tuple(f"data_clean/{d}" for d in MEDQA_DIRS[2:]), "medqa"
    )
    for number, row in json_rows(path, ("question", "options", "answer_idx"), "medqa"):
        if isinstance(row, BadRecord):
            yield row
            continue
        where = f"medqa: {path} line {number}"
        options = row["options"]
        if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
            yield BadRecord(f"{where}: options is not a {{letter: text}} object")
            continue
        letters = sorted(options)
        if row["answer_idx"] not in options:
            yield BadRecord(f"{where}: answer_idx {row['answer_idx']!r} not in {letters}")
            continue
        answer = options[row["answer_idx"]]
        if "answer" in row and str(row["answer"]).strip() != answer.strip():
            yield BadRecord(f"{where}: answer {row['answer']!r} is not option {row['answer_idx']}")
            continue
        yield Record(
            id=f"medqa-{split}-{number}",
            split=split,
            fields={
                "question": str(row["question"]),
                "options": [options[k] for k in letters],
                "answer": answer,
            },
            meta={"meta_info": row.get("meta_info", ""), "source_file": path.name, "line": number},
        )


MEDMCQA_FILES = {"train": "train.json", "validation": "dev.json"}
MEDMCQA_KEYS = ("id", "question", "opa", "opb", "opc", "opd", "cop")


def iter_medmcqa(source: Path, split: str) -> Iterator[Record | BadRecord]:
    """MedMCQA JSON lines -> question, options [opa..opd], answer (text of option cop, 1-based)."""
    path = find_file(source, MEDMCQA_FILES[split], ("", "data"), "medmcqa")
    for number, row in json_rows(path, MEDMCQA_KEYS, "medmcqa"):
        if isinstance(row, BadRecord):
            yield row
            continue
        where = f"medmcqa: {path} line {number} (id {row['id']})"
        if row["cop"] == 0:
            raise DataError(
                f"{where}: cop is 0; the original release numbers options 1-4 (the Hugging Face "
                f"copy uses 0-3); use the files from github.com/medmcqa/medmcqa"
            )
        options = [row[k] for k in ("opa", "opb", "opc", "opd")]
        if not all(isinstance(o, str) and o.strip() for o in options):
            yield BadRecord(f"{where}: an option is empty or not text")
            continue
        if row["cop"] not in (1, 2, 3, 4):
            yield BadRecord(f"{where}: cop {row['cop']!r} is not 1-4")
            continue
        yield Record(
            id=f"medmcqa-{row['id']}",
            split=split,
            fields={
                "question": str(row["question"]),
                "options": options,
                "answer": options[row["cop"] - 1],
            },
            meta={
                "subject_name": row.get("subject_name") or "",
                "topic_name": row.get("topic_name") or "",
                "choice_type": row.get("choice_type") or "",
                "explanation": row.get("exp") or "",
                "source_file": path.name,
            },
        )


PUBMEDQA_KEYS = ("QUESTION", "CONTEXTS", "final_decision")


def iter_pubmedqa(source: Path, split: str) -> Iterator[Record | BadRecord]:
    """PubMedQA PQA-L -> question, context (joined CONTEXTS), options yes/no/maybe, answer."""
    data = read_json(find_file(source, "ori_pqal.json", ("", "data"), "pubmedqa"), "pubmedqa")
    truth_path = find_file(source, "test_ground_truth.json", ("", "data"), "pubmedqa")
    truth = read_json(truth_path, "pubmedqa")
    if not isinstance(data, dict) or not isinstance(truth, dict):
        raise DataError(f"pubmedqa: ori_pqal.json and {truth_path.name} must be JSON objects")
    unknown = sorted(set(truth) - set(data))
    if unknown:
        raise DataError(f"pubmedqa: {truth_path} names pmids not in ori_pqal.json: {unknown[:5]}")
    for pmid, item in data.items():
        if (pmid in truth) != (split == "test"):
            continue
        where = f"pubmedqa: ori_pqal.json pmid {pmid}"
        missing = missing_keys(item, PUBMEDQA_KEYS)
        if missing:
            yield BadRecord(f"{where} lacks keys {missing}")
            continue
        answer = item["final_decision"]
        if answer not in PUBMEDQA_OPTIONS or truth.get(pmid, answer) != answer:
            yield BadRecord(f"{where}: answer {answer!r} (ground truth {truth.get(pmid)!r})")
            continue
        yield Record(
            id=f"pubmedqa-{pmid}",
            split=split,
            fields={
                "question": str(item["QUESTION"]),
                "context": " ".join(str(c) for c in item["CONTEXTS"]),
                "options": list(PUBMEDQA_OPTIONS),
                "answer": answer,
            },
            meta={
                "pmid": pmid,
                "year": item.get("YEAR", ""),
                "meshes": item.get("MESHES", []),
                "long_answer": item.get("LONG_ANSWER", ""),
            },
        )


DATASETS.register(
    Dataset(
        name="medqa",
        iter_records=iter_medqa,
        version=ADAPTER_VERSION,
        description="MedQA (USMLE), 4 options",
        published_format="US/4_options/phrases_no_exclude_{train,dev,test}.jsonl",
        homepage="https://github.com/jind11/MedQA",
    )
)
DATASETS.register(
    Dataset(
        name="medmcqa",
        iter_records=iter_medmcqa,
        splits=("train", "validation"),
        version=ADAPTER_VERSION,
        description="MedMCQA (AIIMS/NEET PG), 4 options; test answers are not public",
        published_format="{train,dev}.json (JSON lines, cop 1-4)",
        homepage="https://medmcqa.github.io",
    )
)
DATASETS.register(
    Dataset(
        name="pubmedqa",
        iter_records=iter_pubmedqa,
        splits=("train", "test"),
        version=ADAPTER_VERSION,
        description="PubMedQA PQA-L: 500 test pmids as published, the other 500 as train",
        published_format="data/ori_pqal.json + data/test_ground_truth.json",
        homepage="https://pubmedqa.github.io",
        labels=PUBMEDQA_OPTIONS,
    )
)

TASKS.register(
    Task(
        name="medqa",
        kind="medical_qa",
        dataset="medqa",
        instructions=(
            "The following are multiple choice questions about medical knowledge. "
            "Answer with the text of the correct option.",
            "You are a medical expert. Choose the correct answer to the USMLE-style question.",
            "Answer the following medical exam question by picking one option.",
        ),
        parts=multiple_choice_parts,
        shots=1,
        description="MedQA (USMLE), 4-option multiple choice.",
    )
)
TASKS.register(
    Task(
        name="medmcqa",
        kind="medical_qa",
        dataset="medmcqa",
        instructions=(
            "The following are multiple choice questions about medical knowledge. "
            "Answer with the text of the correct option.",
            "You are a medical expert. Choose the correct answer to the entrance exam question.",
        ),
        parts=multiple_choice_parts,
        shots=1,
        eval_split="validation",  # MedMCQA's test answers are not public; papers report dev
        description="MedMCQA (Indian medical entrance exams), 4-option multiple choice.",
    )
)
TASKS.register(
    Task(
        name="pubmedqa",
        kind="medical_qa",
        dataset="pubmedqa",
        instructions=(
            "Answer the research question about the abstract with yes, no or maybe.",
            "Given the context from a PubMed abstract, answer the question: yes, no or maybe.",
        ),
        parts=multiple_choice_parts,
        shots=1,
        train_split=None,  # evaluation only, as in Med-PaLM M; exemplars come from its own split
        description="PubMedQA (PQA-L, 1k expert-labelled), yes/no/maybe; evaluation only.",
        notes="Evaluation-only: never mixed into training. Exemplars are drawn from the dataset's "
        "train split (the PQA-L items outside the test fold).",
    )
)
