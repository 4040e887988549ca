"""`generalist bench stream` prints its figures as one JSON object on the last line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generalist.cli import main as cli


def test_bench_stream_last_line_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["bench", "stream", "--examples", "300", "--limit", "200"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("examples_per_s", "vs_webdataset", "vs_hf_interleave", "max_rate_error"):
        assert result[key] >= 0
    assert result["examples_per_s"] > 0 and result["examples"] == 300
    assert result["target_rates"] == {
        "easy_vqa": 0.6,
        "easy_vqa_shape": 0.2,
        "easy_vqa_caption": 0.2,
    }


def test_bench_stream_without_shards_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["bench", "stream", "--shards", str(tmp_path)]) == 2
    assert "generalist shard easy_vqa --out" in capsys.readouterr().err
