"""A tiny "hospital folder" for the own-data tests: noise PNGs, a flat CSV (image, diagnosis,
findings, patient, split) and a conversation JSONL over the same images, and the YAML that
declares three tasks over them (classification, report, VQA) beside the demo mixture."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

LABELS = ("nevus", "melanoma")


@contextmanager
def declared_scope() -> Iterator[None]:
    """The tasks, datasets and mixtures a folder's YAML registers (and the imported-file cache)
    are gone after the block: two tests may declare the same names from their own folders."""
    from generalist.catalog import loading
    from generalist.catalog.mixture import MIXTURES
    from generalist.catalog.records import DATASETS
    from generalist.catalog.task import TASKS

    loaded = dict(loading._loaded_paths)
    try:
        with ExitStack() as scopes:
            for registry in (TASKS, DATASETS, MIXTURES):
                scopes.enter_context(registry.scoped())
            yield
    finally:
        loading._loaded_paths.clear()
        loading._loaded_paths.update(loaded)


YAML = """\
# generalist shard clinic_diagnosis --import {path} --out shards/
own_tasks:
  - name: clinic_diagnosis
    kind: classification
    data: labels.csv
    fields: {{image: file, label: diagnosis, split: split}}
    instructions: [Classify the skin lesion.]
    question: Which diagnosis fits the lesion?
    labels: [nevus, melanoma]
    rate: 0.3
  - name: clinic_report
    kind: report_generation
    data: labels.csv
    fields: {{image: file, report: findings, group: patient}}
    fractions: {{validation: 0.25, test: 0.25}}
    seed: 3
    instructions: [Describe the lesion.]
    shots: 0
    rate: 0.1
  - name: clinic_chat
    kind: vqa
    data: chat.jsonl
    instructions: [Answer the question about the image.]
    rate: 0.2
own_mixture: {{name: clinic, beside: demo}}
"""


def make_folder(root: Path, n: int = 24) -> Path:
    """Write the folder under `root`; returns the path of its own_tasks.yaml."""
    rng = np.random.default_rng(0)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = LABELS[i % 2]
        pixels = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
        pixels[..., 0 if label == "melanoma" else 2] += 150
        Image.fromarray(pixels).save(root / "photos" / f"p{i}.png")
        split = (
            {2: "val", 5: "val", 3: "test", 4: "test"}.get(i % 8, "train") if i >= 4 else "train"
        )
        findings = "dark irregular lesion" if label == "melanoma" else "round even lesion"
        rows.append({"file": f"photos/p{i}.png", "diagnosis": label, "findings": findings,
                     "patient": f"pt{i // 2}", "split": split})  # fmt: skip
    with open(root / "labels.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(root / "chat.jsonl", "w") as file:
        for i, row in enumerate(rows):
            colour = "red" if row["diagnosis"] == "melanoma" else "blue"
            turns = [
                {"role": "user", "content": "<image>What colour is the lesion?"},
                {"role": "assistant", "content": colour},
            ]
            if i % 3 == 0:  # TRL's content parts, and ShareGPT's from/value
                turns[0]["content"] = [{"type": "image"}, {"type": "text", "text": "What colour "
                                       "is the lesion?"}]  # fmt: skip
            if i % 3 == 1:
                turns = [{"from": "human", "value": "What colour is the lesion?<image>"},
                         {"from": "gpt", "value": colour}]  # fmt: skip
                file.write(json.dumps({"conversations": turns, "images": [row["file"]]}) + "\n")
                continue
            file.write(json.dumps({"messages": turns, "images": [row["file"]]}) + "\n")
    path = root / "own_tasks.yaml"
    path.write_text(YAML.format(path=path.name))
    return path
