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


def test_bench_stream_reports_every_loader_or_why_it_was_skipped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from generalist.bench import stream_energon, stream_litdata, stream_mosaic

    args = ["--examples", "416", "--limit", "150", "--resume-at", "200"]  # 13 batches of 32
    loaders = "generalist,megatron-energon,mosaic-streaming,litdata"
    assert cli(["bench", "stream", *args, "--loaders", loaders]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ours = result["loaders"]["generalist"]
    # stratified: within one example at every batch end
    assert ours["max_prefix_error"] <= 1.0 and ours["rate_error_at_416"] <= 1.0
    assert ours["resume_at"] == 224 and ours["resume_exact"] is True and ours["resume_s"] > 0
    for name, module in (
        ("megatron-energon", stream_energon),
        ("mosaic-streaming", stream_mosaic),
        ("litdata", stream_litdata),
    ):
        missing = module.available()
        if missing:  # CI does not install the `bench` extra
            assert result["skipped"][name] == missing and name not in result["loaders"]
        else:
            peer = result["loaders"][name]
            assert peer["examples_per_s"] > 0 and peer["resume_s"] is not None
    assert result["vs_fastest_peer"] is None or result["vs_fastest_peer"] > 0
