"""The real entry points: `generalist tasks`, `generalist render`, user modules from the README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from generalist.catalog.mixture import MIXTURES
from generalist.catalog.task import TASKS
from generalist.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_user_module() -> str:
    """The worked example of the README (the python block after its marker comment)."""
    text = README.read_text()
    match = re.search(r"<!-- user-module-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its user-module example block"
    return match.group(1)


def test_readme_example_names_the_fields_the_code_reads() -> None:
    """The example's comment lists the record fields; its code reads one of them."""
    from generalist.catalog.records import DATASETS

    code = readme_user_module()
    comment = re.search(r"carry fields (.*)", code)
    assert comment, "the example no longer says which fields its records carry"
    named = {re.sub(r"\(.*?\)", "", part).strip() for part in comment.group(1).split(",")}
    read = set(re.findall(r'fields\["(\w+)"\]', code))
    dataset = DATASETS.get("easy_vqa_images")
    record = next(iter(dataset.iter_records(dataset.default_source(), "train")))
    assert read and read <= named - {"..."} <= set(record.fields), (read, named, record.fields)


def test_tasks_json_lists_every_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    names = {t["name"] for t in listing["tasks"]}
    assert names == set(TASKS.names())
    medqa = next(t for t in listing["tasks"] if t["name"] == "medqa")
    assert medqa == {
        **medqa,
        "kind": "medical_qa",
        "dataset": "medqa",
        "metrics": ["accuracy"],
        "templates": 3,
        "shots": 1,
    }
    assert {m["name"] for m in listing["mixtures"]} >= {"demo", "multimedbench"}


def test_tasks_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"^pubmedqa\s+medical_qa\s+pubmedqa \(eval only\)\s+accuracy\s+2\s+1$", out, re.M
    )


def test_unknown_task_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "easy_vqaa"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "generalist render: error: unknown task 'easy_vqaa'; did you mean 'easy_vqa', "
        "'easy_vqa_shape', 'easy_vqa_caption'?"
    )
    assert main(["rendr"]) == 2
    assert "did you mean 'render'" in capsys.readouterr().err


def test_render_from_package_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "easy_vqa_shape", "-n", "2", "--eval"]) == 0
    out = capsys.readouterr().out
    blocks = out.split("===== ")[1:]
    assert len(blocks) == 2
    first = blocks[0]
    assert first.startswith("easy_vqa_shape / test-img")
    assert (
        "Instructions: You are a helpful assistant. Classify the shape shown in the image.\n"
        in first
    )
    assert "Given <img>. Q: Which shape is in the image?\n" in first  # text-only exemplar
    assert "Given <image>. Q: Which shape is in the image?\n" in first
    assert re.search(r"A: \[TARGET: (circle|rectangle|triangle)\]", first)


def test_readme_user_module_adds_task_and_mixture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = tmp_path / "my_tasks.py"
    module.write_text(readme_user_module())
    assert "easy_vqa_color" not in TASKS
    try:
        assert main(["tasks", "--json", "--import", str(module)]) == 0
        listing = json.loads(capsys.readouterr().out)
        color = next(t for t in listing["tasks"] if t["name"] == "easy_vqa_color")
        assert color["kind"] == "classification" and color["dataset"] == "easy_vqa_images"
        mixture = next(m for m in listing["mixtures"] if m["name"] == "my_mixture")
        assert mixture["rates"] == pytest.approx({"easy_vqa": 0.5, "easy_vqa_color": 0.5})
        # Importing the same file again (render in the same process) registers nothing twice.
        assert main(["render", "easy_vqa_color", "-n", "1", "--import", str(module)]) == 0
        out = capsys.readouterr().out
        assert "Q: What colour is the shape?\nOptions: (A) blue (B) black" in out
    finally:
        for registry, name in ((TASKS, "easy_vqa_color"), (MIXTURES, "my_mixture")):
            if name in registry:
                registry.unregister(name)


def test_missing_user_module_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "--import", "./nope/missing.py"]) == 2
    assert "module file './nope/missing.py' does not exist" in capsys.readouterr().err
    assert main(["tasks", "--import", "no_such_module_xyz"]) == 2
    assert "cannot import module 'no_such_module_xyz'" in capsys.readouterr().err
