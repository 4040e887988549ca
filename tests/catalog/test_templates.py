"""Pins the exact rendered prompt of every task kind (house style: templates are plain strings)."""

from __future__ import annotations

import random

from generalist.catalog.records import Record
from generalist.catalog.task import IMAGE_TOKEN, TASKS

PNG = b"\x89PNG fake"  # formatting never decodes images


def rec(id_: str, split: str = "test", images: int = 1, **fields: object) -> Record:
    return Record(id=id_, split=split, images=(PNG,) * images, fields=fields)


def test_vqa_prompt_one_shot_text_only_exemplar() -> None:
    task = TASKS.get("vqa_rad")
    shot = rec("t1", "train", question="Is there a fracture?", answer="no")
    example = task.format(
        rec("e1", question="Which organ is shown?", answer="liver"), exemplars=[shot]
    )
    assert example.prompt == (
        "Instructions: You are a helpful radiology assistant. Answer the question about the "
        "radiology image.\n"
        "Given <img>. Q: Is there a fracture?\n"
        "A: no\n"
        "Given <image>. Q: Which organ is shown?\n"
        "A:"
    )
    assert example.target == "liver"
    assert example.images == (PNG,)  # the text-only exemplar contributes no image
    assert example.exemplar_ids == ("t1",)
    assert example.prompt.count(IMAGE_TOKEN) == len(example.images)


def test_classification_lists_every_label_with_history() -> None:
    task = TASKS.get("pad_ufes_20")
    example = task.format(rec("e2", label="Melanoma", history="Age: 51, Gender: female"))
    assert example.prompt == (
        "Instructions: You are a helpful dermatology assistant. The following are questions "
        "about skin lesions. Categorize the skin lesions into the most likely class given the "
        "patient history.\n"
        "Given <image>. Patient History: Age: 51, Gender: female\n"
        "Q: Which of the following is the most likely diagnosis of the patient's skin lesion?\n"
        "Options: (A) Basal Cell Carcinoma (B) Melanoma (C) Squamous Cell Carcinoma "
        "(D) Actinic Keratosis (E) Seborrheic Keratosis (F) Nevus\n"
        "A:"
    )
    assert example.target == "Melanoma"
    assert example.options == task.labels


def test_binary_condition_classification() -> None:
    task = TASKS.get("mimic_cxr_classification")
    example = task.format(rec("d1:Edema", condition="Edema", label="yes"), template=1)
    assert example.prompt == (
        "Instructions: Look at the chest X-ray and answer yes or no: is the condition present?\n"
        "Given <image>. Q: Is edema present in this chest X-ray?\n"
        "Options: (A) yes (B) no\n"
        "A:"
    )


def test_report_generation_with_exemplar_images() -> None:
    from dataclasses import replace

    task = replace(TASKS.get("mimic_cxr_report"), exemplar_images=True)
    shot = Record("s", "train", (b"shot",), {"findings": "Clear lungs.", "indication": ""})
    example = task.format(
        rec("e3", findings="Small left effusion.", indication="Dyspnea."), exemplars=[shot]
    )
    assert example.prompt == (
        "Instructions: You are a helpful radiology assistant. Describe what you see in the chest "
        "X-ray: write the findings section of the radiology report.\n"
        "Given <image>. Q: Write the findings section of the report.\n"
        "A: Clear lungs.\n"
        "Given <image>. Indication: Dyspnea.\n"
        "Q: Write the findings section of the report.\n"
        "A:"
    )
    assert example.images == (b"shot", PNG)  # exemplar image first, in prompt order


def test_summarization_text_only() -> None:
    task = TASKS.get("mimic_iii_summarization")
    example = task.format(
        rec("e4", images=0, findings="No acute hemorrhage.", impression="Normal.")
    )
    assert example.prompt == (
        "Instructions: You are a helpful radiology assistant. Summarize the findings of the "
        "radiology report into an impression.\n"
        "Findings: No acute hemorrhage.\n"
        "Q: Write the impression.\n"
        "A:"
    )
    assert example.images == ()


def test_medical_qa_multiple_choice_and_context() -> None:
    medqa = TASKS.get("medqa")
    example = medqa.format(
        rec(
            "q1",
            images=0,
            question="Best first step?",
            options=["CT", "MRI", "X-ray", "Observe"],
            answer="CT",
        )
    )
    assert example.prompt == (
        "Instructions: The following are multiple choice questions about medical knowledge. "
        "Answer with the text of the correct option.\n"
        "Q: Best first step?\n"
        "Options: (A) CT (B) MRI (C) X-ray (D) Observe\n"
        "A:"
    )
    pubmedqa = TASKS.get("pubmedqa")
    example = pubmedqa.format(
        rec(
            "p1",
            images=0,
            question="Does X cause Y?",
            context="We found.",
            options=["yes", "no", "maybe"],
            answer="maybe",
        )
    )
    assert example.prompt.endswith(
        "We found.\nQ: Does X cause Y?\nOptions: (A) yes (B) no (C) maybe\nA:"
    )


def test_training_samples_paraphrases_evaluation_uses_first() -> None:
    task = TASKS.get("medqa")
    record = rec("q", images=0, question="Q?", options=["a", "b"], answer="a")
    rng = random.Random(7)
    seen = {task.format(record, rng=rng).template_index for _ in range(60)}
    assert seen == set(range(len(task.instructions)))
    assert task.format(record).template_index == 0
    assert task.format(record, template=2).prompt.startswith(
        f"Instructions: {task.instructions[2]}\n"
    )
