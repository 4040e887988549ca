"""Tiles of Idefics3 / SmolVLM and LLaVA-NeXT / OneVision in our batches: tile caps through the
processor (and the model's grids), truncation that never cuts an image block, OneVision's
untiled multi-image examples, and mixed batches without dummy images as the processor batches
them. Tiny checkpoints from tests/support/tiny_idefics3_smolvlm_llava_next.py."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from generalist.batching.collate import Collator
from generalist.batching.model_inputs import model_inputs
from generalist.batching.tiled_images import cap_tiles, tile_settings

from support import tiny_idefics3_smolvlm_llava_next as tiny
from support.model_data import CORPUS

TILED = tiny.TILED


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each family's tiny checkpoint dir, built once for this module."""
    corpus = CORPUS
    root = tmp_path_factory.mktemp("families_b_tiles")
    return {name: save(root / name, corpus) for name, save in tiny.SAVERS.items()}


@pytest.mark.parametrize("family", ["idefics3", "llava_next"])
def test_without_dummies_a_mixed_batch_is_the_processors_batch(saved, h, family):
    """dummy_images off: a text-only row next to an image row, as the processor batches them
    (Idefics3: the text row's tile slots all zero, mask 0; LLaVA-NeXT: only the image's)."""
    bundle = tiny.bundle(saved[family])
    square, text = tiny.example(h, 0, "blue", (40, 40)), h.text_example()
    batch = Collator(bundle, 512, dummy_images="off")([square, text])
    ref = bundle.processor(text=[square.prompt, text.prompt], images=[tiny.pil(square), []])
    for row in (0, 1):
        ids = list(ref["input_ids"][row])
        assert batch["input_ids"][row, : len(ids)].tolist() == ids
    keys = {"pixel_values", "pixel_attention_mask", "image_sizes"} & set(ref)
    assert keys == set(batch) & {"pixel_values", "pixel_attention_mask", "image_sizes"}
    for key in keys:
        want = ref[key]
        want = torch.stack([torch.as_tensor(w) for w in want]) if isinstance(want, list) else want
        assert torch.equal(batch[key], torch.as_tensor(want)), key


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_tile_caps_bound_the_tiles_and_the_model_agrees(saved, h, family):
    bundle = tiny.bundle(saved[family])
    model_type = bundle.base_model.config.model_type
    big = tiny.example(h, 0, "blue", (64, 64))
    full = Collator(bundle, 512)([big])
    settings = cap_tiles(bundle.base_model, bundle.processor, 1)
    assert settings == tile_settings(model_type, 1, bundle.processor.image_processor)
    capped = Collator(bundle, 512)([big])
    if family in TILED:
        tiles = lambda b: int(b["pixel_attention_mask"].flatten(2).any(-1).sum())  # noqa: E731
        assert (tiles(full), tiles(capped)) == (5, 1)  # 2x2 + the whole image -> the whole
    else:
        assert (full["pixel_values"].shape[1], capped["pixel_values"].shape[1]) == (5, 2)
        assert bundle.base_model.config.image_grid_pinpoints == [[32, 32]]
    n_full = int((full["input_ids"] == bundle.image_token_id).sum())
    n_capped = int((capped["input_ids"] == bundle.image_token_id).sum())
    assert n_capped < n_full
    with torch.no_grad():  # the model computes the capped token count too
        assert torch.isfinite(bundle.model(**model_inputs(capped)).loss)


@pytest.mark.parametrize("family", ["idefics3", "llava_onevision"])
def test_model_max_tiles_caps_through_the_collator(saved, h, family):
    """The run's key `model.max_tiles` gives the same batch as capping the processor by hand."""
    from generalist.model.build import build_model
    from generalist.model.config import LoraSettings, ModelConfig

    cfg = ModelConfig.parse({"name_or_path": str(saved[family]), "max_tiles": 1})
    keyed = build_model(cfg, LoraSettings.parse({"r": 4}))
    big = tiny.example(h, 0, "blue", (64, 64))
    by_key = Collator(keyed, 512)([big])
    by_hand = tiny.bundle(saved[family])
    cap_tiles(by_hand.base_model, by_hand.processor, 1)
    want = Collator(by_hand, 512)([big])
    assert by_key["input_ids"].tolist() == want["input_ids"].tolist()
    assert torch.equal(by_key["pixel_values"], want["pixel_values"])


def test_tile_kwargs_per_family():
    from transformers import Idefics3ImageProcessorPil, LlavaNextImageProcessorPil

    idefics = Idefics3ImageProcessorPil(
        size={"longest_edge": 1536}, max_image_size={"longest_edge": 384}
    )
    assert tile_settings("idefics3", 4, idefics) == {"size": {"longest_edge": 768}}
    assert tile_settings("smolvlm", 100, idefics) == {"size": {"longest_edge": 1536}}
    assert tile_settings("idefics3", 0, idefics) == {"do_image_splitting": False}
    # LLaVA-NeXT's hub setting: 336 px tiles, grids 1x2, 2x1, 2x2, 3x1, 1x3
    nxt = LlavaNextImageProcessorPil(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
    )
    assert tile_settings("llava_next", 2, nxt) == {"image_grid_pinpoints": [[336, 672], [672, 336]]}
    assert tile_settings("llava_onevision", 1, nxt) == {"image_grid_pinpoints": [[336, 336]]}
    assert tile_settings("paligemma", 1, nxt) == {}


@pytest.mark.parametrize("family", ["idefics3", "llava_onevision"])
def test_truncation_never_cuts_into_an_image_block(saved, h, family):
    from generalist.errors import DataError

    bundle = tiny.bundle(saved[family])
    ex = tiny.example(h, 0, "blue", (40, 40))  # "Instructions: ... Given <image>. Q: ..."
    full = Collator(bundle, 512).encode(ex)
    first = "<fake_token_around_image>" if family in TILED else "<image>"
    start = full.input_ids.index(bundle.tokenizer.convert_tokens_to_ids(first))
    keep = 1 if full.input_ids[0] == bundle.tokenizer.bos_token_id else 0
    fits = Collator(bundle, full.length - start + keep).encode(ex)
    assert fits.input_ids[keep:] == full.input_ids[start:]
    with pytest.raises(DataError, match="would cut an image"):
        Collator(bundle, full.length - start + keep - 1).encode(ex)


def test_onevision_multi_image_examples_are_not_tiled(saved, h):
    """LLaVA-OneVision tiles an example's image only when it is the example's only image."""
    bundle = tiny.bundle(saved["llava_onevision"])
    two = replace(
        h.image_example(0, color="blue"),
        prompt="Given <image> and <image>. Q: what color is the shape?\nA:",
        images=(tiny.png("blue", (40, 40)), tiny.png("red", (64, 32))),
    )
    batch = Collator(bundle, 512)([two, tiny.example(h, 1, "red", (40, 40))])
    assert batch["batch_num_images"].tolist() == [2, 1]
    image_id = bundle.image_token_id
    assert int((batch["input_ids"][0] == image_id).sum()) == 2 * (4 + 1)  # 4 + newline each
    ref = bundle.processor(text=[two.prompt], images=[tiny.pil(two)])
    assert batch["input_ids"][0, : len(ref["input_ids"][0])].tolist() == list(ref["input_ids"][0])
    with torch.no_grad():
        assert torch.isfinite(bundle.model(**model_inputs(batch)).loss)


@pytest.mark.parametrize("family", ["idefics3", "llava_next"])
def test_flops_count_the_tiles_the_tower_runs(saved, h, family):
    """MFU's vision work: the real tiles only (the processor's all-zero padding tiles are
    dropped by the model), each its patches (+ CLS for LLaVA-NeXT's CLIP)."""
    from generalist.train.flops import vision_positions

    bundle = tiny.bundle(saved[family])
    rows = [tiny.example(h, 0, "blue", (64, 64)), tiny.example(h, 1, "red", (64, 32))]
    batch = Collator(bundle, 512)(rows)
    per_image, cls = vision_positions(bundle.base_model.config, batch)
    # Idefics3: 2x2 + whole, 2x1 + whole of 16 patches; NeXT: whole + 2x2, whole + 1x2 of 4 + 1
    want = [16] * (5 + 3) if family in TILED else [5] * (5 + 3)
    assert (per_image, cls) == (want, 0 if family in TILED else 1)
    assert batch["pixel_values"].shape[:2] == (2, 5)  # 2 padding tiles there, not counted


REAL_IMAGES = {  # (width, height): a square and a wide image, tiles as the published models cut
    "idefics3": [(500, 500), (800, 200)],  # 4x4 + whole, 4x1 + whole tiles of 364 px
    "smolvlm": [(500, 500), (800, 200)],  # 4x4 + whole, 4x1 + whole tiles of 512 px
    "llava_next": [(500, 500), (800, 200)],  # whole + 2x2, whole + 1x3 tiles of 336 px
    "llava_onevision": [(1536, 1152), (800, 200)],  # whole + 3x4 (pooled: anyres_max_9), 1x3
}


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_published_tile_geometry_token_counts_are_the_models(h, tmp_path, family):
    """At the published models' tile, patch and grid sizes (a narrow tower and LM), our batch
    of a square image, a text-only row (dummy) and a wide image holds exactly as many image
    tokens per image as the model computes features (it raises otherwise)."""
    corpus = CORPUS
    path = tiny.SAVERS[family](tmp_path / family, corpus, geometry=tiny.REAL_GEOMETRY[family])
    bundle = tiny.bundle(path)
    sizes = REAL_IMAGES[family]
    rows = [tiny.example(h, 0, "blue", sizes[0]), h.text_example()]
    rows.append(tiny.example(h, 1, "red", sizes[1]))
    batch = Collator(bundle, 16384)(rows)
    image_id = bundle.image_token_id
    counts = [int((batch["input_ids"][r] == image_id).sum()) for r in range(3)]
    ref = bundle.processor(text=[rows[0].prompt], images=[tiny.pil(rows[0])])
    assert counts[0] == list(ref["input_ids"][0]).count(image_id) > counts[2] > counts[1]
    with torch.no_grad():
        out = bundle.model(**model_inputs(batch))
    assert torch.isfinite(out.loss)


def test_idefics3_multi_image_rows_keep_their_tiles_in_order(saved, h):
    """Two images in one example, one in the next: each row's tiles in image order, padded to
    the row with most, as Idefics3Processor batches them."""
    bundle = tiny.bundle(saved["idefics3"])
    two = replace(
        h.image_example(0, color="blue"),
        prompt="Given <image> and <image>. Q: what color is the shape?\nA:",
        images=(tiny.png("blue", (64, 32)), tiny.png("red", (32, 64))),
    )
    one = tiny.example(h, 1, "red", (40, 40))
    batch = Collator(bundle, 512)([one, two])
    ref = bundle.processor(text=[one.prompt, two.prompt], images=[tiny.pil(one), tiny.pil(two)])
    assert torch.equal(batch["pixel_values"], torch.as_tensor(ref["pixel_values"]))
    assert torch.equal(batch["pixel_attention_mask"], torch.as_tensor(ref["pixel_attention_mask"]))
    assert batch["pixel_attention_mask"].flatten(2).any(-1).sum(-1).tolist() == [5, 6]
    for row in (0, 1):
        ids = list(ref["input_ids"][row])
        assert batch["input_ids"][row, : len(ids)].tolist() == ids
    with torch.no_grad():
        assert torch.isfinite(bundle.model(**model_inputs(batch)).loss)
