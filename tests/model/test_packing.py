"""Packing (generalist.batching.packing): a packed micro-batch computes, in fp32 on CPU, the
per-example losses, the summed loss and every trained parameter's gradient of the same
examples unpacked (tolerance: 1e-5 relative, the largest element of each gradient as scale);
image and text-only examples share a row. Families packing cannot keep exact are refused."""

from __future__ import annotations

import contextlib
import functools
import itertools
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from generalist.batching.chat import ChatTurns
from generalist.batching.collate import Collator
from generalist.batching.grouping import MicroBatch, cut_window
from generalist.batching.losses import example_losses
from generalist.batching.model_inputs import model_inputs
from generalist.batching.packing import (
    budget_groups,
    check_packable,
    pack_batch,
    pack_lengths,
    packed_example_losses,
    packing_options,
)
from generalist.catalog.records import Example
from generalist.errors import ConfigError, DataError
from generalist.train.step import example_target_counts

from support.flash_reference import flash_attention

RTOL = 1e-5


def _templates():
    from support import chat_templates

    return chat_templates


ROLE_WORDS = "You are a helpful assistant. system user assistant model"  # template text


def _examples(h, chat: bool) -> list[Example]:
    """Image and text-only examples of different lengths (answers of 1 to 5 words)."""
    colours = ["red", "blue", "green"]
    answers = ["yes", "no yes no", "yes no yes no yes"]
    out = []
    for i, colour in enumerate(colours):
        e = h.image_example(i, colour)
        out.append(e)
    for i, answer in enumerate(answers):
        out.append(h.text_example(10 + i, answer))
    return _as_chat(out) if chat else out


def _as_chat(out: list[Example]) -> list[Example]:
    """The raw examples' questions as chat turns (images marked where the raw prompt has them)."""
    turned = []
    for e in out:
        question = e.prompt.split("\n", 1)[1].removesuffix("\nA:")
        turns = ChatTurns("answer the question.", (), question)
        turned.append(Example(e.task, e.id, "", e.target, e.images, turns=turns))
    return turned


def _bundle(path: Path, fmt: str):
    """build_model on a saved tiny checkpoint, LoRA r=4, no dropout."""
    from generalist.model.build import build_model
    from generalist.model.config import LoraSettings, ModelConfig

    cfg = ModelConfig.parse({"name_or_path": str(path), "prompt_format": fmt})
    return build_model(cfg, LoraSettings.parse({"r": 4, "dropout": 0.0}))


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def packed_vs_unpacked(
    bundle, examples, capacity: int | None = None, flash: bool = False
) -> dict[str, float]:
    """Max relative differences of per-example losses, summed loss and gradients (capacity
    None: the longest example plus the longest text-only one, so they share a row). `flash`:
    the packed batch runs on transformers' flash_attention_2 path (CPU kernels), all examples
    in its one row; unpacked stays on sdpa."""
    model = bundle.model
    model.eval()  # no dropout: the same function twice
    collator = Collator(bundle, max_length=256)
    encoded = collator.encode_many(examples)
    if capacity is None:
        text_only = [e.length for e in encoded if not e.images or e.has_dummy]
        capacity = max(e.length for e in encoded) + max(text_only)
    unpacked = collator.pad(encoded)
    model.zero_grad()
    inputs = model_inputs(unpacked)
    labels = inputs.pop("labels")
    sums, counts = example_losses(model(**inputs).logits, labels)
    sums.sum().backward()
    expected = _grads(model)

    if flash:
        capacity = sum(e.length for e in encoded)
    rows = pack_lengths([e.length for e in encoded], capacity)
    assert len(rows) < len(encoded)  # something was packed
    assert any(
        {bool(encoded[i].images) and not encoded[i].has_dummy for i in r} == {True, False}
        for r in rows
    )  # an image and a text-only example in one row
    order = [i for r in rows for i in r]
    kind = collator.layout.kind
    with flash_attention(model) if flash else contextlib.nullcontext([]) as varlen_calls:
        packed = pack_batch(
            [[encoded[i] for i in r] for r in rows],
            collator.pad_id,
            kind,
            int(bundle.image_token_id or 0),
            **packing_options(bundle.base_model, kind, collator.layout.soft_token_id),
        )
        assert packed["example_ids"] == [encoded[i].id for i in order]
        model.zero_grad()
        inputs = model_inputs(packed)
        labels = inputs.pop("labels")
        p_sums, p_counts = packed_example_losses(
            model(**inputs).logits, labels, packed["example_index"]
        )
        p_sums.sum().backward()
    got = _grads(model)
    if flash:  # no mask; every text attention layer cut the row at the examples' starts
        assert "attention_mask" not in packed
        starts = [int(s) for s in (packed["example_index"][0].diff() != 0).nonzero()[:, 0] + 1]
        width = packed["input_ids"].shape[1]
        text_calls = [c for c in varlen_calls if c[-1] == width]  # Qwen's vision has its own
        assert text_calls and all(c == [0, *starts, width] for c in text_calls)
    assert p_counts.tolist() == counts[order].tolist()
    assert example_target_counts(packed, True).tolist() == counts[order].tolist()
    assert packed["real_tokens"] == int(unpacked["attention_mask"].sum())

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))

    return {
        "losses": rel(p_sums.detach(), sums.detach()[order]),
        "sum": rel(p_sums.sum().detach(), sums.sum().detach()),
        "grads": max(rel(got[n], expected[n]) for n in expected),
        "n_grads": len(expected),
    }


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("fmt", ["raw", "chat"])
def test_llava_packed_equals_unpacked(make_bundle, h, fmt, attn):
    torch.manual_seed(0)
    bundle = make_bundle(prompt_format=fmt, attn_implementation=attn)
    if fmt == "chat":
        text = _templates().chat_template("llava")
        bundle.processor.chat_template = bundle.tokenizer.chat_template = text
    diffs = packed_vs_unpacked(bundle, _examples(h, fmt == "chat"), capacity=100)
    assert diffs["n_grads"] > 0  # LoRA (and projector) parameters are trained
    assert diffs["losses"] < RTOL and diffs["sum"] < RTOL and diffs["grads"] < RTOL, diffs


@pytest.mark.parametrize("fmt", ["raw", "chat"])
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "gemma3"])
def test_qwen_vl_and_gemma3_packed_equal_unpacked(tmp_path, h, family, fmt):
    """Qwen: each example's own M-RoPE index; Gemma 3: bidirectional image blocks, sliding
    window layers."""
    from support import tiny_gemma3_qwen_mllama as tiny

    corpus = [*h.corpus, ROLE_WORDS]
    if family == "gemma3":
        path = tiny.save_tiny_gemma3(tmp_path / family, corpus)
    else:
        path = tiny.save_tiny_qwen_vl(tmp_path / family, corpus, family)
    if fmt == "chat":
        template = {"qwen2_5_vl": "qwen2_vl"}.get(family, family)
        path = _templates().attach_chat_template(path, template)
    torch.manual_seed(0)
    bundle = _bundle(path, fmt)
    diffs = packed_vs_unpacked(bundle, _examples(h, fmt == "chat"), capacity=200)
    assert diffs["n_grads"] > 0
    assert diffs["losses"] < RTOL and diffs["sum"] < RTOL and diffs["grads"] < RTOL, diffs


@pytest.mark.parametrize("kind", ["mllama", "blip2"])
def test_a_family_packing_cannot_keep_exact_is_a_config_error(kind):
    with pytest.raises(
        ConfigError, match=rf"batch\.packing: the 'x' family \(token layout '{kind}'"
    ):
        check_packable(kind, "x", "sdpa")
    for accepted in ("default", "text", "mrope", "gemma3", "anyres", "tiled", "paligemma"):
        check_packable(accepted, "x", "sdpa")


def test_a_kernel_or_family_flash_cannot_pack_is_a_config_error():
    for kind in ("gemma3", "paligemma"):  # two-way blocks need a mask
        flash = r"model\.attn_implementation 'flash_attention_2' packs by position ids without"
        with pytest.raises(ConfigError, match=rf"batch\.packing: {flash} a mask"):
            check_packable(kind, "x", "flash_attention_2")
    with pytest.raises(ConfigError, match=r"'flex_attention' cannot keep attention inside"):
        check_packable("default", "llava", "flex_attention")
    for kind in ("default", "text", "mrope", "anyres", "tiled"):
        check_packable(kind, "x", "flash_attention_2")


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl", "llava_onevision", "smolvlm"])
def test_flash_attention_varlen_packing_equals_unpacked(tmp_path, h, make_bundle, family):
    """transformers' own flash_attention_2 path (CPU kernels: tests/support/flash_reference.py)
    on one packed row without a mask: the positions cut it per example, the vision tower is
    untouched, and losses and gradients equal sdpa unpacked."""
    torch.manual_seed(0)
    examples = _examples(h, chat=False)
    if family == "llava":
        bundle = make_bundle()
    elif family == "qwen2_5_vl":
        from support import tiny_gemma3_qwen_mllama as tiny

        bundle = _bundle(tiny.save_tiny_qwen_vl(tmp_path / family, h.corpus, family), "raw")
    else:
        from support import tiny_idefics3_smolvlm_llava_next as tiny

        bundle = _bundle(tiny.SAVERS[family](tmp_path / family, h.corpus), "raw")
    diffs = packed_vs_unpacked(bundle, examples, flash=True)
    print(family, "flash varlen", diffs)
    assert diffs["n_grads"] > 0
    assert diffs["losses"] < RTOL and diffs["sum"] < RTOL and diffs["grads"] < RTOL, diffs


def _row_load(row: list[int], lengths: list[int], imageless: list[bool], dummy: int) -> int:
    """A packed row's tokens: its examples' and one dummy image when none has an image."""
    return sum(lengths[i] for i in row) + (dummy if all(imageless[i] for i in row) else 0)


def test_best_fit_decreasing_places_every_example_once_within_capacity():
    """With text-only examples (`imageless`), a row of only those carries one dummy image."""
    rng = random.Random(0)
    for case in range(600):
        capacity = rng.randint(8, 300)
        dummy = 0 if case % 2 else rng.randint(1, capacity // 2)
        n = rng.randint(1, 60)
        imageless = [bool(dummy) and rng.random() < 0.4 for _ in range(n)]
        lengths = [rng.randint(1, capacity - (dummy if t else 0)) for t in imageless]
        rows = pack_lengths(lengths, capacity, imageless, dummy)
        load = functools.partial(_row_load, lengths=lengths, imageless=imageless, dummy=dummy)
        assert sorted(i for r in rows for i in r) == list(range(n))
        assert all(load(r) <= capacity for r in rows)
        # no two rows could be merged (so fewer than 2 x the rows an optimal packing needs)
        assert all(load(a + b) > capacity for a, b in itertools.combinations(rows, 2))
        assert [min(r) for r in rows] == sorted(min(r) for r in rows)


def test_an_example_longer_than_max_tokens_is_a_data_error_naming_the_key():
    with pytest.raises(DataError, match=r"does not fit in batch\.max_tokens 10"):
        pack_lengths([4, 11], 10)
    with pytest.raises(DataError, match=r"batch\.max_tokens 10"):
        budget_groups([4, 11], 10, 8)


def test_token_budget_groups_fill_to_the_budget_and_respect_the_cap():
    rng = random.Random(1)
    for _ in range(300):
        budget, cap = rng.randint(50, 400), rng.randint(1, 16)
        lengths = [rng.randint(1, 50) for _ in range(rng.randint(1, 80))]
        groups = budget_groups(lengths, budget, cap)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        for g in groups:
            assert len(g) <= cap and len(g) * max(lengths[i] for i in g) <= budget
        # sorted by length, a group stops only when the next example would not fit
        by_length = sorted(groups, key=lambda g: max(lengths[i] for i in g))
        for g, nxt in itertools.pairwise(by_length):
            longest_next = min(lengths[i] for i in nxt)
            assert len(g) == cap or (len(g) + 1) * longest_next > budget


def test_cut_window_packs_rows_and_batches_build_lazily(make_bundle, h):
    bundle = make_bundle()
    collator = Collator(bundle, max_length=64)
    encoded = collator.encode_many(_examples(h, chat=False))
    made = cut_window(encoded, collator, micro=4, max_tokens=100, packing=True)
    batches = [m() for m in made]
    with_image = {e.id for e in encoded if e.images and not e.has_dummy}
    for b in batches:  # a row's real images, or one dummy image in a row of text only
        assert b["pixel_values"].shape[0] == max(1, len(with_image & set(b["example_ids"])))
    ids = [i for b in batches for i in b["example_ids"]]
    assert sorted(ids) == sorted(e.id for e in encoded) and len(batches) < len(encoded)
    assert all(b["input_ids"].shape[0] == 1 and b["input_ids"].shape[1] <= 100 for b in batches)
    budget = [m() for m in cut_window(encoded, collator, micro=4, max_tokens=60, packing=False)]
    assert all(b["input_ids"].numel() <= 60 and len(b["example_ids"]) <= 4 for b in budget)
    assert MicroBatch({"done": 1}, budget[0]).batch is budget[0]


@pytest.mark.parametrize("fmt", ["raw", "chat"])
@pytest.mark.parametrize("family", ["llava_next", "llava_onevision", "idefics3", "smolvlm"])
def test_tiled_and_anyres_families_packed_equal_unpacked(tmp_path, h, family, fmt):
    """Tiles and image sizes stay per image (LLaVA-NeXT / OneVision: image_sizes and
    batch_num_images per example; Idefics3 / SmolVLM: each example's tiles, pixel mask)."""
    from support import tiny_idefics3_smolvlm_llava_next as tiny

    path = tiny.SAVERS[family](tmp_path / family, [*h.corpus, ROLE_WORDS])
    if fmt == "chat":
        # Idefics3 keeps no template of its own in tests/model; SmolVLM's is its successor's
        path = _templates().attach_chat_template(path, {"idefics3": "smolvlm"}.get(family, family))
    torch.manual_seed(0)
    bundle = _bundle(path, fmt)
    examples = _examples(h, chat=False)
    sizes = [(40, 40), (64, 32), (32, 64)]  # own aspect ratios: own tile counts
    examples = [
        replace(e, images=(tiny.png(c, s),)) if e.images else e
        for e, c, s in zip(examples, ["red", "blue", "green"] * 2, sizes * 2, strict=True)
    ]
    # and one example of two images (OneVision: batch_num_images 2, its images not tiled)
    two = (tiny.png("red", (40, 40)), tiny.png("blue", (64, 32)))
    prompt = examples[0].prompt.replace("<image>", "<image> <image>")
    examples[0] = replace(examples[0], prompt=prompt, images=two)
    if fmt == "chat":
        examples = _as_chat(examples)
    diffs = packed_vs_unpacked(bundle, examples)
    print(family, fmt, diffs)
    assert diffs["n_grads"] > 0
    assert diffs["losses"] < RTOL and diffs["sum"] < RTOL and diffs["grads"] < RTOL, diffs


def test_paligemma_packed_equals_unpacked(tmp_path, h):
    """Prefix-LM: each example's prompt both ways, its target causally, positions from 1
    (raw format only: PaliGemma has no chat template)."""
    from support import tiny_paligemma_qwen2_vl as tiny

    path = tiny.save_tiny_paligemma(tmp_path / "paligemma", h.corpus)
    torch.manual_seed(0)
    bundle = _bundle(path, "raw")
    diffs = packed_vs_unpacked(bundle, _examples(h, chat=False))
    print("paligemma raw", diffs)
    assert diffs["n_grads"] > 0
    assert diffs["losses"] < RTOL and diffs["sum"] < RTOL and diffs["grads"] < RTOL, diffs


def test_mllama_cannot_be_packed_exactly_its_unpacked_loss_already_depends_on_batch_mates(
    tmp_path, h
):
    """Why check_packable refuses Mllama: a token that attends no image (here the prompt before
    <|image|>) gets the mean of every image of its row in the cross-attention layers. So the
    same one-image example's loss changes beside an example of two images (its row gains a
    padding image), and a packed neighbour's images would change it too."""
    from support import tiny_gemma3_qwen_mllama as tiny

    bundle = _bundle(tiny.save_tiny_mllama(tmp_path / "mllama", h.corpus), "raw")
    bundle.model.eval()
    one = h.image_example(0, "red")
    two = replace(
        h.image_example(1, "blue"),
        prompt=one.prompt.replace("<image>", "<image> <image>"),
        images=(h.png("blue"), h.png("green")),
    )
    collator = Collator(bundle, max_length=256)
    encoded = collator.encode_many([one, two])

    def first_loss(group) -> float:
        inputs = model_inputs(collator.pad(group))
        labels = inputs.pop("labels")
        with torch.no_grad():
            sums, _ = example_losses(bundle.model(**inputs).logits, labels)
        return float(sums[0])

    alone, beside = first_loss(encoded[:1]), first_loss(encoded)
    print("mllama: the one-image example alone, beside two images", alone, beside)
    assert abs(alone - beside) / abs(alone) > 1e-4, (alone, beside)
