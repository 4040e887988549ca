"""`generalist shard` and `generalist bench shard` through the real CLI entry point."""

from __future__ import annotations

import json
import textwrap

from generalist import cli
from generalist.catalog.records import DATASETS
from generalist.shards.manifest import load_manifest, read_records


def write_mimic(root):
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", 3), ("validate", 1), ("test", 2)):
        rows = "".join(f"{name}{i},Findings {i}.,Impression {i}.\n" for i in range(n))
        (root / f"{name}.csv").write_text("id,findings,impression\n" + rows)
    return root


def test_shard_command_writes_and_summarises(tmp_path, capsys):
    source = write_mimic(tmp_path / "mimic")
    argv = ["shard", "mimic_iii", "--source", str(source), "--out", str(tmp_path / "out")]
    assert cli.main([*argv, "--shard-size", "2", "--splits", "train", "test", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("mimic_iii/train: 3 records in 2 shard(s), ")
    assert lines[0].endswith("MB, skipped 0")
    assert lines[1].startswith("mimic_iii/test: 2 records in 1 shard(s), ")
    assert list(load_manifest(tmp_path / "out", "mimic_iii")["splits"]) == ["train", "test"]


def test_shard_command_errors_are_one_line_exit_2(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert cli.main(["shard", "medqa", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("generalist shard: error: dataset 'medqa' needs --source PATH (")
    assert len(err.strip().splitlines()) == 1
    assert cli.main(["shard", "medqa", "--source", str(tmp_path / "nope"), "--out", out]) == 2
    assert "dataset 'medqa': source " in capsys.readouterr().err
    assert cli.main(["shard", "medmnist", "--out", out]) == 2
    assert "unknown dataset 'medmnist'; did you mean" in capsys.readouterr().err
    source = write_mimic(tmp_path / "mimic")
    (source / "test.csv").write_text("id,findings,impression\nx,Findings.,\n")
    argv = ["shard", "mimic_iii", "--source", str(source), "--out", out, "--no-progress"]
    assert cli.main(argv) == 2
    assert "test.csv row 1: empty impression" in capsys.readouterr().err
    assert cli.main([*argv, "--skip-bad"]) == 0
    assert "mimic_iii/test: 0 records in 0 shard(s), 0.0 MB, skipped 1" in capsys.readouterr().out


def test_shard_command_imports_a_user_adapter(tmp_path, capsys):
    module = tmp_path / "my_data.py"
    module.write_text(
        textwrap.dedent(
            """
            from generalist.catalog import DATASETS, Dataset, Record

            def iter_notes(source, split):
                for line in (source / f"{split}.txt").read_text().splitlines():
                    yield Record(f"{split}-{line}", split, (), {"text": line})

            DATASETS.register(Dataset(name="h1_user_notes", iter_records=iter_notes,
                                      splits=("train",)))
            """
        )
    )
    (tmp_path / "train.txt").write_text("a\nb\n")
    try:
        argv = ["shard", "h1_user_notes", "--import", str(module), "--source", str(tmp_path)]
        assert cli.main([*argv, "--out", str(tmp_path / "out"), "--no-progress"]) == 0
        records = list(read_records(tmp_path / "out", "h1_user_notes", "train"))
        assert [r.fields for r in records] == [{"text": "a"}, {"text": "b"}]
    finally:
        DATASETS.unregister("h1_user_notes")


def test_user_adapter_options_reach_it_and_the_manifest(tmp_path, capsys):
    module = tmp_path / "my_opts.py"
    module.write_text(
        textwrap.dedent(
            """
            from generalist.catalog import DATASETS, Dataset, Record

            def iter_notes(source, split, case="lower"):
                for line in (source / f"{split}.txt").read_text().splitlines():
                    text = line.upper() if case == "upper" else line
                    yield Record(f"{split}-{line}", split, (), {"text": text})

            DATASETS.register(Dataset(name="h1_opt_notes", iter_records=iter_notes,
                                      splits=("train",), options={"case": "lower or upper"}))
            """
        )
    )
    (tmp_path / "train.txt").write_text("a\nb\n")
    out = tmp_path / "out"
    try:
        argv = ["shard", "h1_opt_notes", "--import", str(module), "--source", str(tmp_path)]
        assert cli.main([*argv, "--out", str(out), "--no-progress", "--option", "case=upper"]) == 0
        records = list(read_records(out, "h1_opt_notes", "train"))
        assert [r.fields for r in records] == [{"text": "A"}, {"text": "B"}]
        assert load_manifest(out, "h1_opt_notes")["options"] == {"case": "upper"}
        assert cli.main([*argv, "--out", str(out), "--option", "cas=upper"]) == 2
        err = capsys.readouterr().err
        assert "has no option 'cas'; did you mean 'case'? its options: case: lower or upper" in err
        assert cli.main(["tasks", "--json", "--import", str(module)]) == 0
        listing = json.loads(capsys.readouterr().out)["dataset_options"]
        assert listing["h1_opt_notes"] == {"case": "lower or upper"}
        assert set(listing["slake_vqa"]) == {"language"} and set(listing["mimic_iii"]) == {"pairs"}
        assert set(listing["mimic_cxr"]) == {"reports"}
        assert cli.main(["render", "easy_vqa", "--shards", str(out), "--option", "case=x"]) == 2
        assert "--option is for --source" in capsys.readouterr().err
    finally:
        DATASETS.unregister("h1_opt_notes")


def test_bench_shard_last_line_is_json(tmp_path, capsys):
    argv = ["bench", "shard", "--limit", "4", "--image-size", "32", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["records"] == 12 and figures["shards"] == 3
    assert figures["records_per_s"] > 0 and figures["mb_per_s"] > 0
    assert load_manifest(tmp_path, "easy_vqa")["image_policy"]["size"] == 32
    assert cli.main(["bench", "nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
