"""Idefics3, SmolVLM (image tiles, pixel_attention_mask) and LLaVA-NeXT, LLaVA-OneVision (anyres
tiles, image_sizes, image_newline) through the auto path: tiny models built from config, saved
as plain HF dirs (tests/support/tiny_idefics3_smolvlm_llava_next.py), then driven by our
build_model, Collator, generation and export exactly as a hub checkpoint would be."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from PIL import Image

from generalist.batching.collate import Collator
from generalist.batching.model_inputs import model_inputs
from generalist.batching.padding import IGNORE_INDEX
from generalist.batching.tiled_images import dummy_kwargs
from generalist.eval.generation import HFPredictor
from generalist.model.export import export
from generalist.model.lora import trainable_parameter_names
from generalist.model.model_dir import save_model_dir

from support import tiny_idefics3_smolvlm_llava_next as tiny
from support.model_data import CORPUS

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TILED = tiny.TILED


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each family's tiny checkpoint dir, built once for this module."""
    corpus = CORPUS
    root = tmp_path_factory.mktemp("families_b")
    return {name: save(root / name, corpus) for name, save in tiny.SAVERS.items()}


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_batch_is_the_processors_own_output(saved, h, family):
    """Rows: a square image, a text-only example (masked dummy image), a wide image (another
    tile count): ids, label masks, pixels, masks and sizes as the model's processor gives them."""
    bundle = tiny.bundle(saved[family])
    assert bundle.family == "image_text_to_text" and bundle.image_token == "<image>"
    square, text, wide = (
        tiny.example(h, 0, "blue", (40, 40)),
        h.text_example(),
        tiny.example(h, 1, "red", (64, 32)),
    )
    batch = Collator(bundle, 512)([square, text, wide])
    proc, tok = bundle.processor, bundle.tokenizer
    ref = proc(text=[square.prompt, wide.prompt], images=[tiny.pil(square), tiny.pil(wide)])
    ref_text = proc(text=[text.prompt])["input_ids"][0]
    kind = "tiled" if family in TILED else "anyres"  # the dummy: 32 x 32 px, one tile / 32 x 4
    blank = [[Image.new("RGB", (32, 32) if family in TILED else (32, 4))]]
    ref_dummy = proc(text=["<image>"], images=blank, **dummy_kwargs(kind))
    rows = [(0, ref["input_ids"][0], square), (1, ref_text, text), (2, ref["input_ids"][1], wide)]
    for row, ids, ex in rows:
        ids = list(ids)
        n = len(ids)
        assert batch["input_ids"][row, :n].tolist() == ids
        assert batch["labels"][row, :n].tolist() == [IGNORE_INDEX] * n
        target = [t for t in batch["labels"][row].tolist() if t != IGNORE_INDEX]
        assert tok.decode(target, skip_special_tokens=True).strip() == ex.target
        assert target[-1] == tok.eos_token_id
        assert batch["input_ids"][row, n : n + len(target)].tolist() == target
        assert batch["attention_mask"][row].tolist().count(1) == n + len(target)
    # the text row's dummy block: the processor's own tokens of a blank image, never attended
    dummy = [i for i in ref_dummy["input_ids"][0] if i != tok.bos_token_id]
    start = int(batch["attention_mask"][1].sum())  # after the text row's prompt and target
    assert batch["input_ids"][1, start : start + len(dummy)].tolist() == dummy
    image_id = bundle.image_token_id
    counts = [int((batch["input_ids"][r] == image_id).sum()) for r in range(3)]
    assert counts[0] != counts[2]  # the two aspect ratios: different tile counts
    if family in TILED:
        want_p, want_m = (
            torch.as_tensor(ref["pixel_values"]),
            torch.as_tensor(ref["pixel_attention_mask"]),
        )
        tiles = want_m.flatten(2).any(-1).sum(-1).tolist()
        assert tiles[0] != tiles[1] and tiles[0] > 1  # 2x2 tiles + whole vs 1x2 + whole
        assert batch["pixel_values"].shape == (3, max(tiles), 3, 32, 32)
        assert torch.equal(batch["pixel_values"][[0, 2]], want_p)
        assert torch.equal(batch["pixel_attention_mask"][[0, 2]], want_m)
        one = torch.as_tensor(ref_dummy["pixel_values"])[0]
        assert one.shape[0] == 1 and torch.equal(batch["pixel_values"][1, :1], one)
        assert batch["pixel_attention_mask"][1, 1:].sum() == 0  # padding tiles: mask 0
        assert counts[1] == 4  # the dummy: one tile of image_seq_len tokens
    else:
        want = torch.stack([torch.as_tensor(p) for p in ref["pixel_values"]])
        assert batch["pixel_values"].shape[0] == 3  # one entry per image, the dummy between
        assert torch.equal(batch["pixel_values"][[0, 2], : want.shape[1]], want)
        assert batch["image_sizes"].tolist() == [[40, 40], [4, 32], [32, 64]]
        if family == "llava_onevision":
            assert batch["batch_num_images"].tolist() == [1, 1, 1]
        square_blank = proc(text=["<image>"], images=[[Image.new("RGB", (32, 32))]])
        assert counts[1] == 4 < square_blank["input_ids"][0].count(image_id) == 10  # unpadded
    with torch.no_grad():  # the model counts as many image features as there are tokens
        assert torch.isfinite(bundle.model(**model_inputs(batch)).loss)
    # examples encoded apart (as length grouping re-batches them) pad into the same batch
    collator = Collator(bundle, 512)
    apart = collator.pad([collator.encode(e) for e in (square, text, wide)])
    for key in ("input_ids", "labels", "pixel_values", "pixel_attention_mask", "image_sizes"):
        assert key not in batch or torch.equal(apart[key], batch[key]), key


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_learns_generates_scores_exports_and_reloads(saved, h, tmp_path, family):
    bundle = tiny.bundle(saved[family], target_modules=ALL_LINEAR)
    names = trainable_parameter_names(bundle.model)  # LoRA in the LM, the projector in full
    projector = "connector" if family in TILED else "multi_modal_projector"
    assert any(projector in n for n in names) and any("lora_B" in n for n in names)
    assert not any("vision" in n for n in names)
    examples = [
        tiny.example(h, 0, "blue", (40, 40)),
        h.text_example(answer="no"),
        tiny.example(h, 1, "red", (64, 32)),
    ]
    batch = Collator(bundle, 512)(examples)
    losses = h.train(bundle, batch, steps=25, lr=2e-2)
    assert losses[-1] < 0.1 * losses[0], losses
    predictor = HFPredictor(bundle, max_length=512, max_new_tokens=4)
    assert predictor.generate(examples) == ["blue", "no", "red"]
    assert predictor.generate(examples[1:2]) == ["no"]  # a text-only batch: a dummy image
    scores = predictor.score_options([replace(examples[2], options=("blue", "red"))])
    assert scores[0][1] > scores[0][0]
    save_model_dir(bundle, tmp_path / "ckpt" / "model")
    out = export(tmp_path / "ckpt", tmp_path / "out")
    from transformers import AutoModelForImageTextToText

    plain = AutoModelForImageTextToText.from_pretrained(out).eval()
    gen = Collator(bundle, 512, for_generation=True)(examples)
    kw = {"max_new_tokens": 4, "min_new_tokens": 4, "do_sample": False}
    with torch.no_grad():
        a = plain.generate(**model_inputs(gen), **kw)
        b = bundle.model.generate(**model_inputs(gen), **kw)
    assert a.tolist() == b.tolist()
    reloaded = tiny.bundle(out)  # the exported dir loads back through our path, processor too
    assert type(reloaded.processor).__name__ == type(bundle.processor).__name__


@pytest.mark.parametrize("family", ["smolvlm", "llava_onevision"])
def test_processors_without_torchvision_are_the_real_classes(saved, h, tmp_path, family):
    """SmolVLM's / OneVision's processor class itself, with no video processor; it saves and
    reloads (settings, chat template) as save_pretrained would."""
    import transformers

    from generalist.model.videoless_processor import load_videoless

    proc = load_videoless(saved[family])
    name = "SmolVLMProcessor" if family == "smolvlm" else "LlavaOnevisionProcessor"
    assert isinstance(proc, getattr(transformers, name)) and proc.video_processor is None
    proc.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    proc.save_pretrained(tmp_path / "saved")
    again = load_videoless(tmp_path / "saved")
    assert again.chat_template == proc.chat_template
    ex = tiny.example(h, 0, "blue", (64, 32))
    a = proc(text=[ex.prompt], images=[tiny.pil(ex)])
    b = again(text=[ex.prompt], images=[tiny.pil(ex)])
    assert a["input_ids"] == b["input_ids"]
    assert torch.equal(torch.as_tensor(a["pixel_values"]), torch.as_tensor(b["pixel_values"]))
