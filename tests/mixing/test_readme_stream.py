"""The stream example of the docs (README.md, or docs/ once the reference moves there) runs as
written: build a tiny model's collator, stream the demo mixture, save and restore the state."""

from __future__ import annotations

import re
from pathlib import Path

from generalist.shards.writer import write_dataset

ROOT = Path(__file__).resolve().parents[2]


def stream_example() -> str:
    """The python block that calls build_stream with a collate it defines itself."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        if not page.is_file():
            continue
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S):
            if "build_stream(" in block and "stream.dataloader(collate_fn=collate)" in block:
                return block
    raise AssertionError(f"no stream example (build_stream + collate) in {pages}")


def test_the_stream_example_runs_as_written(tmp_path, monkeypatch, capsys):
    code = stream_example()
    assert "collate = " in code  # defined, not assumed
    for dataset in ("easy_vqa", "easy_vqa_images"):  # the demo mixture's data
        write_dataset(dataset, None, tmp_path / "shards", image_size=32, limit=64, progress=False)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "stream_example", "exec"), {"__name__": "stream_example"})
    printed = capsys.readouterr().out.splitlines()
    steps = [line for line in printed if re.match(r"\d+ torch\.Size\(\[8, \d+\]\) \[", line)]
    assert [s.split()[0] for s in steps] == ["0", "1", "2"]
    realized = eval(printed[-1].split("} {")[0] + "}")  # the realized rates dict, printed first
    assert set(realized) == {"easy_vqa", "easy_vqa_shape", "easy_vqa_caption"}
