"""`generalist bench train --mixture spread`: the tiny mixture it builds has MultiMedBench's
length spread (one-word VQA answers on one image, long reports on two images, text-only
summaries of long notes) at the declared rates, read through the real shard and stream path."""

from __future__ import annotations

import collections

from generalist.bench.train import write_spread_data
from generalist.catalog.loading import load_catalog
from generalist.catalog.mixture import MIXTURES
from generalist.mixing.stream import build_stream
from generalist.shards.writer import write_dataset


def test_the_spread_mixture_has_short_long_and_text_only_examples(tmp_path):
    declared = write_spread_data(tmp_path / "spread", 16)
    load_catalog([str(declared)])
    for name in ("spread_vqa", "spread_report", "spread_summary"):
        write_dataset(name, None, tmp_path / "shards", splits=["train"], progress=False)
    stream = build_stream(
        MIXTURES.get("spread"), tmp_path / "shards", "train", 0, 0, 1, batch_size=8
    )
    seen = collections.defaultdict(list)
    for _, e in zip(range(400), stream, strict=False):
        seen[e.task].append(e)
    shares = {task: len(v) / 400 for task, v in seen.items()}
    assert abs(shares["spread_vqa"] - 0.5) < 0.05, shares
    assert (
        abs(shares["spread_report"] - 0.25) < 0.05 and abs(shares["spread_summary"] - 0.25) < 0.05
    )
    assert {len(e.images) for e in seen["spread_vqa"]} == {1}
    assert {len(e.images) for e in seen["spread_report"]} == {2}
    assert {len(e.images) for e in seen["spread_summary"]} == {0}
    assert {len(e.target.split()) for e in seen["spread_vqa"]} == {1}
    assert min(len(e.target.split()) for e in seen["spread_report"]) >= 40
    # a summary's prompt holds the long note, its target a few words
    assert min(len(e.prompt.split()) for e in seen["spread_summary"]) >= 60
    assert max(len(e.target.split()) for e in seen["spread_summary"]) <= 15
