"""`generalist render --tokens MODEL`: the ids, the trained positions and the decoded trained span
the collator builds, from the model's processor and config alone (no weights)."""

from __future__ import annotations

import re

from generalist.batching.collate import Collator
from generalist.batching.padding import IGNORE_INDEX
from generalist.catalog.task import TASKS
from generalist.cli import main as cli_main
from generalist.cli.render import render_examples, source_records
from generalist.model.build import build_model
from generalist.model.config import LoraSettings, ModelConfig

from support import tiny_paligemma_qwen2_vl as tiny


def test_render_tokens_shows_the_collators_ids_and_label_mask(tmp_path, h, capsys):
    qwen = tiny.save_tiny_qwen2_vl(tmp_path / "qwen", [*h.corpus, "What shape is this? circle"])
    argv = ["render", "easy_vqa_shape", "-n", "1", "--eval", "--tokens", str(qwen)]
    assert cli_main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("[TOKENS: "))
    summary, cells, trained = lines[head : head + 3]
    # what the training collator of the built model (weights and all) makes of the same example
    bundle = build_model(ModelConfig.parse({"name_or_path": str(qwen)}), LoraSettings.parse({}))
    task = TASKS.get("easy_vqa_shape")
    records = source_records(task, None, task.eval_split)  # the example render showed
    (example,) = render_examples(task, records, source_records(task, None, "train"), 1, 0, False)
    encoded = Collator(bundle, 512).encode(example)
    ids, labels = encoded.input_ids, encoded.labels
    want = [t for t, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert summary == f"[TOKENS: {len(ids)} ids, {len(want)} trained (*)]"
    assert trained == f"[TRAINED: {bundle.tokenizer.decode(want)!r}]"
    assert trained == f"[TRAINED: ' {example.target}<|im_end|>']"  # the answer and eos
    assert [int(t) for t in re.findall(r"\[\*(\d+) ", cells)] == want
    pad = bundle.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert f"[{pad} <|image_pad|>] x{ids.count(pad)}" in cells  # one image's run, folded
