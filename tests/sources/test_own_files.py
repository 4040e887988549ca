"""Own data without Python: JSONL/CSV in the conversation and flat forms, tasks declared in
YAML, and the one-line errors for bad rows, missing images and undeclared labels."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from generalist.tasks.declared import OwnTask, register

from generalist.catalog.loading import import_user_module
from generalist.catalog.mixture import MIXTURES
from generalist.catalog.records import DATASETS, BadRecord, Record
from generalist.catalog.task import TASKS
from generalist.cli import main as cli_main
from generalist.errors import ConfigError, DataError
from generalist.shards.manifest import read_records
from generalist.sources.own_files import FlatSource, iter_records

from support.own_data import declared_scope, make_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("clinic")
    with declared_scope():
        import_user_module(str(make_folder(root)))
        yield root


def records(source: FlatSource, split: str) -> list[Record | BadRecord]:
    return list(iter_records(source, split))


def test_flat_form_maps_fields_splits_from_a_field_and_reads_images_relative_to_the_file(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # paths are relative to the file, not the working directory
    fields = {"image": "file", "label": "diagnosis", "split": "split"}
    source = FlatSource(
        folder / "labels.csv", fields=fields, target="label", labels=("nevus", "melanoma")
    )
    by_split = {s: records(source, s) for s in ("train", "validation", "test")}
    assert [len(v) for v in by_split.values()] == [14, 5, 5]  # "val" reads as validation
    first = by_split["train"][0]
    assert isinstance(first, Record) and first.id == "labels-2"  # csv line 2
    assert first.fields["label"] == "nevus"
    assert first.images == ((folder / "photos" / "p0.png").read_bytes(),)


def test_fraction_splits_follow_the_seed_and_keep_a_group_in_one_split(folder: Path) -> None:
    fields = {"image": "file", "report": "findings", "group": "patient"}

    def splits(seed: int) -> dict[str, str]:
        source = FlatSource(folder / "labels.csv", fields=fields, target="report", seed=seed,
                            fractions={"validation": 0.25, "test": 0.25})  # fmt: skip
        found = {}
        for split in ("train", "validation", "test"):
            for record in records(source, split):
                assert isinstance(record, Record)
                found[record.meta["images"][0]] = split
        return found

    first, again, other = splits(3), splits(3), splits(4)
    assert first == again and first != other and len(first) == 24
    for i in range(0, 24, 2):  # p{i} and p{i+1} are one patient
        assert first[f"photos/p{i}.png"] == first[f"photos/p{i + 1}.png"]
    assert set(first.values()) == {"train", "validation", "test"}


def test_conversation_form_reads_messages_content_parts_and_sharegpt(folder: Path) -> None:
    source = FlatSource(folder / "chat.jsonl", form="conversation")
    got = [r for s in ("train", "validation", "test") for r in records(source, s)]
    assert len(got) == 24 and all(isinstance(r, Record) for r in got)
    assert {r.fields["question"] for r in got} == {"What colour is the lesion?"}  # type: ignore[union-attr]
    by_line = {r.meta["line"]: r for r in got}  # type: ignore[union-attr]
    assert by_line[2].fields["answer"] == "red" and by_line[2].meta["images"] == ["photos/p1.png"]  # type: ignore[union-attr]


def test_declared_tasks_are_registered_with_kind_metrics_and_a_mixture_beside_demo(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert TASKS.get("clinic_diagnosis").metrics == ("accuracy", "macro_f1", "macro_auc")
    assert TASKS.get("clinic_report").primary_metric == "bleu1"
    rates = MIXTURES.get("clinic").rates()
    demo = MIXTURES.get("demo").rates()
    assert rates["clinic_diagnosis"] == pytest.approx(0.3)
    assert rates["easy_vqa"] == pytest.approx(demo["easy_vqa"] * 0.4)
    assert cli_main(["tasks", "--import", str(folder / "own_tasks.yaml")]) == 0
    listed = capsys.readouterr().out
    assert all(f"clinic_{t}" in listed for t in ("diagnosis", "report", "chat"))


def test_shard_and_render_take_the_declared_tasks(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    imports = ["--import", str(folder / "own_tasks.yaml")]
    for task in ("clinic_diagnosis", "clinic_chat"):
        argv = ["shard", task, "--out", str(tmp_path), "--no-progress", "--image-size", "16"]
        assert cli_main([*argv, *imports]) == 0
    stored = list(read_records(tmp_path, "clinic_diagnosis", "validation"))
    assert len(stored) == 5 and {r.fields["label"] for r in stored} == {"nevus", "melanoma"}
    capsys.readouterr()
    argv = ["render", "clinic_diagnosis", "--shards", str(tmp_path), "-n", "1", "--eval"]
    assert cli_main([*argv, *imports]) == 0
    shown = capsys.readouterr().out
    assert "Q: Which diagnosis fits the lesion?\nOptions: (A) nevus (B) melanoma\nA:" in shown
    assert cli_main(["render", "clinic_chat", "-n", "1", *imports]) == 0  # straight from the file
    assert "Given <image>. Q: What colour is the lesion?\nA: [TARGET:" in capsys.readouterr().out


def _own(name: str, root: Path, **kwargs: object) -> OwnTask:
    spec = {"name": name, "kind": "classification", "data": root / "labels.csv",
            "fields": {"image": "file", "label": "diagnosis", "split": "split"},
            "instructions": ["Classify."], "labels": ["nevus", "melanoma"], **kwargs}  # fmt: skip
    return OwnTask.model_validate(spec)


def test_bad_rows_are_one_line_naming_file_and_line_or_skipped_and_counted(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "bad"
    shutil.copytree(folder, root)
    lines = (root / "labels.csv").read_text().splitlines()
    lines[3] = lines[3] + ",extra"  # line 4: one cell too many
    lines[1] = lines[1].replace("nevus", "naevus")  # line 2: a label not declared
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    (root / "photos" / "p6.png").unlink()  # line 8
    register(_own("bad_clinic", root))
    argv = [
        "shard",
        "bad_clinic",
        "--out",
        str(tmp_path / "s"),
        "--no-progress",
        "--splits",
        "train",
    ]
    assert cli_main(argv) != 0
    assert capsys.readouterr().err == (
        f"generalist shard: error: bad_clinic: {root / 'labels.csv'} line 2: label 'naevus' is "
        f"not one of the declared labels ['nevus', 'melanoma']\n"
    )
    assert cli_main([*argv, "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    assert "train: 11 records in 1 shard(s)" in printed and printed.endswith("skipped 3\n")
    got = {str(r) for r in iter_records(_source(root), "train") if isinstance(r, BadRecord)}
    csv_file = root / "labels.csv"
    assert got == {
        f"bad_clinic: {csv_file} line 2: label 'naevus' is not one of the declared labels "
        "['nevus', 'melanoma']",
        f"bad_clinic: {csv_file} line 4 has 6 cells; the header has 5 (a comma inside a value "
        "needs quotes)",
        f"bad_clinic: {csv_file} line 8: image {root / 'photos' / 'p6.png'} is missing",
    }


def _source(root: Path) -> FlatSource:
    from generalist.tasks.declared import source_of

    return source_of(_own("bad_clinic", root).model_copy(update={"data": root / "labels.csv"}))


def test_a_jsonl_line_that_does_not_parse_is_named(tmp_path: Path, folder: Path) -> None:
    text = (folder / "chat.jsonl").read_text().splitlines()
    text.insert(2, '{"messages": [')
    (tmp_path / "chat.jsonl").write_text("\n".join(text))
    shutil.copytree(folder / "photos", tmp_path / "photos")
    source = FlatSource(tmp_path / "chat.jsonl", form="conversation")
    bad = [r for r in iter_records(source, "train") if isinstance(r, BadRecord)]
    assert len(bad) == 1 and str(bad[0]).startswith(
        f"own data: {tmp_path / 'chat.jsonl'} line 3 is not valid JSON"
    )
    (tmp_path / "two.jsonl").write_text(
        json.dumps({"messages": [{"role": "user", "content": "a"}]})
    )
    (got,) = iter_records(
        FlatSource(tmp_path / "two.jsonl", form="conversation", fractions={}), "train"
    )
    assert "line 1 has 1 user and 0 assistant turns" in str(got)


def test_declaration_mistakes_are_one_line_before_any_work(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"has no column\(s\) \['diagnosis_code'\] .* fix the `fields`"
    ):
        list(
            iter_records(
                FlatSource(
                    folder / "labels.csv", fields={"label": "diagnosis_code"}, target="label"
                ),
                "train",
            )
        )
    with pytest.raises(
        ConfigError, match="answers with field 'report': add `report: <your column>`"
    ):
        register(_own("no_report", folder, kind="report_generation", labels=[]))
    with pytest.raises(ConfigError, match=r"fields \['diagnosis'\] are not ours to map"):
        register(_own("wrong_way", folder, fields={"diagnosis": "label", "label": "diagnosis"}))
    (tmp_path / "chat.json").write_text("[]")  # LLaMA-Factory's .json list: one line to convert
    with pytest.raises(DataError, match=r"jq -c '\.\[\]' chat.json > chat.jsonl"):
        list(iter_records(FlatSource(tmp_path / "chat.json", form="conversation"), "train"))
    path = tmp_path / "t.yaml"
    path.write_text(
        "own_tasks:\n  - name: x\n    kind: vqa\n    data: a.jsonl\n    instruction: [a]\n"
    )
    unknown = r"unknown key '.*t.yaml.own_tasks.0.instruction' \(known: data, description"
    with pytest.raises(ConfigError, match=unknown):
        import_user_module(str(path))


def test_tasks_declared_in_the_run_config_itself_register_on_load(folder: Path) -> None:
    from generalist.catalog.loading import load_catalog
    from generalist.train.config import load_config

    config = folder / "run.yaml"
    config.write_text(
        "own_tasks:\n  - {name: inline_chat, kind: vqa, data: chat.jsonl, instructions: [Look.]}\n"
        "tasks: {inline_chat: 1.0}\nmodel: {tiny: {}}\n"
    )
    cfg = load_config(config)
    assert cfg.imports == [str(config)]
    load_catalog(cfg.imports)
    assert TASKS.get("inline_chat").dataset == "inline_chat"
    dataset = DATASETS.get("inline_chat")
    assert dataset.default_source is not None  # the data file, relative to the run config
    assert len(list(dataset.records(dataset.default_source(), "train"))) == 17


def test_the_worked_example_of_docs_own_data_declares_its_tasks_and_mixture(tmp_path: Path) -> None:
    import re
    import subprocess
    import sys

    doc = (Path(__file__).resolve().parents[2] / "docs" / "own_data.md").read_text()
    declarations = re.findall(r"```yaml\n(.*?)```", doc, flags=re.S)[0]
    make_folder(tmp_path / "clinic")  # the same columns as the example's labels.csv
    (tmp_path / "clinic" / "own_tasks.yaml").write_text(declarations)
    run = subprocess.run(
        [sys.executable, "-m", "generalist.cli", "tasks", "--import", "clinic/own_tasks.yaml"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert re.search(r"^clinic_diagnosis +classification ", run.stdout, flags=re.M)
    assert re.search(r"^clinic_report +report_generation ", run.stdout, flags=re.M)
    assert (
        "clinic_demo: clinic_diagnosis 20.00%, clinic_report 10.00%, easy_vqa 42.00%" in run.stdout
    )
