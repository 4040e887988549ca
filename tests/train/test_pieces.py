"""The training pieces without DeepSpeed: checkpoint pointer/pruning/RNG, per-example losses,
the loss meter, and length-grouped batches that resume mid-window exactly."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from generalist.batching.grouping import grouped_batches
from generalist.batching.losses import example_losses
from generalist.catalog.loading import import_user_module
from generalist.catalog.mixture import mixture_from_rates
from generalist.errors import ConfigError
from generalist.train.checkpoint import (
    latest_checkpoint,
    prune,
    resolve_resume,
    rng_state,
    set_rng_state,
    write_manifest,
)
from generalist.train.step import LossMeter

from support import TINY_TASKS


def _fake_checkpoint(root: Path, name: str, complete: bool = True) -> Path:
    path = root / name
    (path / "engine").mkdir(parents=True)
    if complete:
        (path / "trainer.json").write_text(json.dumps({"step": 1, "world_size": 1}))
        write_manifest(path)
    return path


def test_latest_pointer_ignores_partial_saves_and_prune_keeps_newest(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    _fake_checkpoint(root, "step-000004")
    _fake_checkpoint(root, "step-000008")
    _fake_checkpoint(root, "step-000012.tmp", complete=False)  # a save killed midway
    _fake_checkpoint(root, "step-000010", complete=False)  # no manifest: damaged
    (root / "latest").write_text("step-000008\n")
    assert latest_checkpoint(root) == root / "step-000008"
    assert resolve_resume("auto", root) == root / "step-000008"
    assert resolve_resume(None, root) is None
    (root / "latest").write_text("step-000099\n")  # pointer to something gone: newest complete
    assert latest_checkpoint(root) == root / "step-000008"
    with pytest.raises(ConfigError, match="is not a complete checkpoint"):
        resolve_resume(str(root / "step-000012.tmp"), root)
    prune(root, keep=1)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000008", "step-000010"]
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_rng_state_round_trips_through_weights_only_load(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_example_losses_match_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 2, 6, -100, -100]])
    sums, counts = example_losses(logits, labels)
    assert counts.tolist() == [3, 2]  # shifted: positions 0..3 predict labels[1:]
    shifted = F.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1))
    assert float(sums.sum() / counts.sum()) == pytest.approx(float(shifted), rel=1e-6)
    second = F.cross_entropy(logits[1, 0:2], labels[1, 1:3], reduction="sum")
    assert float(sums[1]) == pytest.approx(float(second), rel=1e-6)


def test_loss_meter_token_weighted_per_task() -> None:
    meter = LossMeter(["a", "b"], torch.device("cpu"))
    batch = {"task_names": ["a", "b", "a"], "attention_mask": torch.tensor([[1, 1, 0]] * 3)}
    meter.add(batch, torch.tensor([2.0, 6.0, 4.0]), torch.tensor([1, 3, 1]))
    metrics = meter.summary(lr=0.5)
    assert metrics["train/loss"] == pytest.approx(12 / 5)
    assert metrics["train/a/loss"] == pytest.approx(3.0)
    assert metrics["train/b/loss"] == pytest.approx(2.0)
    assert metrics["train/padding_fraction"] == pytest.approx(1 / 3)
    assert metrics["train/lr"] == 0.5 and metrics["train/tokens_per_s"] > 0
    assert "train/a/loss" not in meter.summary(lr=0.5)  # reset after a summary


@dataclass
class _Encoded:
    id: str
    length: int


class _FakeCollator:
    """Stands in for generalist.batching.collate.Collator: lengths from text, (id, length) rows."""

    def encode_many(self, examples, on_bad=None):
        return [_Encoded(e.id, len(e.prompt) + len(e.target)) for e in examples]

    def pad(self, rows):
        return [(r.id, r.length) for r in rows]


def test_grouped_batches_cut_padding_and_resume_mid_window(shard_root: Path) -> None:
    from generalist.mixing.stream import build_stream

    import_user_module(str(TINY_TASKS))
    mixture = mixture_from_rates("t", {"train_colors": 1.0, "train_words": 1.0})

    def batches(start=None):
        stream = build_stream(mixture, shard_root, "train", 0, 0, 1, batch_size=4 * 3)
        return grouped_batches(stream.dataloader(collate_fn=list), _FakeCollator(), 4, start)

    reference = [next(it) for it in [batches()] for _ in range(10)]
    for k in (1, 3, 5, 7):  # window boundaries (3, 6) and mid-window points
        resumed = batches(start=json.loads(json.dumps(reference[k - 1][0])))
        assert [next(resumed)[1] for _ in range(10 - k)] == [b for _, b in reference[k:]], k
    # the same windows cut in stream order pad more than the length-grouped micro-batches
    stream = build_stream(mixture, shard_root, "train", 0, 0, 1, batch_size=4 * 3)
    windows = [w for w, _ in zip(stream.dataloader(collate_fn=list), range(3))]
    lengths = [[len(e.prompt) + len(e.target) for e in w] for w in windows]

    def padding(groups: list[list[int]]) -> int:
        return sum(max(g) * len(g) - sum(g) for g in groups)

    in_order = padding([w[i : i + 4] for w in lengths for i in (0, 4, 8)])
    grouped = padding([[n for _, n in b] for _, b in reference[:9]])
    same = sorted(n for _, b in reference[:9] for _, n in b)
    assert sorted(n for w in lengths for n in w) == same
    assert grouped < in_order


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path: Path, tiny_config) -> None:
    from generalist.train.checkpoint import check_resumable
    from generalist.train.config import load_config

    cfg = load_config(tiny_config()).model_dump(mode="json")
    path = _fake_checkpoint(tmp_path, "step-000004")
    (path / "trainer.json").write_text(json.dumps({"step": 4, "world_size": 2, "config": cfg}))
    write_manifest(path)
    check_resumable(path, {**cfg, "steps": 99})  # more steps: fine
    changed = load_config(tiny_config(), ["model.tiny.hidden_size=64"]).model_dump(mode="json")
    with pytest.raises(ConfigError) as err:
        check_resumable(path, changed)
    assert str(err.value).startswith(
        "config key 'model.tiny.hidden_size' is 64 but checkpoint "
    ) and "was written with 32; resume with the same value, or start afresh" in str(err.value)
