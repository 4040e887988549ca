"""Gemma 3 (MedGemma), Qwen2.5-VL, Qwen3-VL and Mllama (Llama 3.2 Vision) through the auto path:
tiny models built from config, saved as HF dirs, loaded by path through build_model; our batch
equals the model's own processor output token for token; LoRA learns, greedy generation and
option scoring work, and the export reloads with plain transformers to the same tokens."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
import torch
from PIL import Image

from generalist.batching.collate import Collator
from generalist.batching.model_inputs import model_inputs
from generalist.batching.padding import IGNORE_INDEX
from generalist.eval.generation import HFPredictor
from generalist.model.build import build_model
from generalist.model.config import LoraSettings, ModelConfig
from generalist.model.export import export
from generalist.model.model_dir import save_model_dir

from support import tiny_gemma3_qwen_mllama as tiny

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FAMILIES = ["gemma3", "qwen2_5_vl", "qwen3_vl", "mllama"]
REAL_PROCESSORS = {"qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen3_vl": "Qwen3VLProcessor"}


def save_tiny(family, root, corpus):
    if family == "gemma3":
        return tiny.save_tiny_gemma3(root, corpus)
    if family == "mllama":
        return tiny.save_tiny_mllama(root, corpus)
    return tiny.save_tiny_qwen_vl(root, corpus, family)


def _bundle(path, **lora):
    cfg = ModelConfig.parse({"name_or_path": str(path)})
    return build_model(cfg, LoraSettings.parse({"r": 4, "dropout": 0.0, **lora}))


def own_processor(family, bundle, monkeypatch):
    """The model's own processor class (Qwen's built without its video processor, which needs
    torchvision: nothing of it is used for images)."""
    if family not in REAL_PROCESSORS:
        return bundle.processor
    import transformers
    from transformers.processing_utils import ProcessorMixin

    check = ProcessorMixin.check_argument_for_proper_class
    monkeypatch.setattr(
        ProcessorMixin,
        "check_argument_for_proper_class",
        lambda self, name, arg: None if arg is None else check(self, name, arg),
    )
    cls = getattr(transformers, REAL_PROCESSORS[family])
    return cls(
        image_processor=bundle.processor.image_processor,
        tokenizer=bundle.tokenizer,
        video_processor=None,
    )


def _image(ex):
    return Image.open(io.BytesIO(ex.images[0])).convert("RGB")


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_equals_the_processor_token_for_token(family, tmp_path, h, monkeypatch):
    bundle = _bundle(save_tiny(family, tmp_path / family, h.corpus))
    assert bundle.family == "image_text_to_text"
    img, txt = h.image_example(color="blue"), h.text_example(answer="no")
    collator = Collator(bundle, 256)
    batch = collator([img, txt])
    own = own_processor(family, bundle, monkeypatch)
    marker = collator.layout.marker_text()
    want_img = own(text=[img.prompt.replace("<image>", marker)], images=[_image(img)])
    want_txt = own(text=[txt.prompt])
    types = {"gemma3": "token_type_ids", "mllama": "cross_attention_mask"}.get(
        family, "mm_token_type_ids"
    )
    for row, want, target in ((0, want_img, "blue"), (1, want_txt, "no")):
        ids = list(want["input_ids"][0])
        n = len(ids)
        assert batch["input_ids"][row, :n].tolist() == ids
        labels = batch["labels"][row].tolist()
        assert labels[:n] == [IGNORE_INDEX] * n  # the loss is on the target only
        got = [t for t in labels if t != IGNORE_INDEX]
        assert got == collator.target_ids(target)
        assert bundle.tokenizer.decode(got[:-1]).strip() == target
        assert labels[n : n + len(got)] == got
        if types in want:  # Qwen / Mllama: per-token types or masks for image rows only
            assert batch[types][row, :n].tolist() == torch.as_tensor(want[types])[0].tolist()
        assert batch["attention_mask"][row, :n].sum() == n
    n_img, n_txt = len(want_img["input_ids"][0]), len(want_txt["input_ids"][0])
    assert batch[types][0, :n_img].any() and not batch[types][1, :n_txt].any()
    pixels = torch.as_tensor(want_img["pixel_values"])
    if family == "gemma3":  # one 32x32 image per row: the real one, the text row's dummy
        assert batch["pixel_values"].shape == (2, *pixels.shape[1:])
        dummy = batch["token_type_ids"][1] == 1
        assert dummy.sum() == 4 and batch["attention_mask"][1][dummy].sum() == 0
    elif family == "mllama":  # [rows, images, tiles, ...]: the text row's is padding
        assert batch["pixel_values"].shape == (2, *pixels.shape[1:])
        for key in ("aspect_ratio_ids", "aspect_ratio_mask"):
            want_key = torch.as_tensor(want_img[key])
            assert batch[key][0].tolist() == want_key[0].tolist()
        assert batch["aspect_ratio_ids"][1].tolist() == [0]  # the processor's padding image
        assert batch["cross_attention_mask"].shape[:3] == (2, batch["input_ids"].shape[1], 1)
    else:  # no dummy beside a real image (M-RoPE grid order): the image's patches only
        assert batch["pixel_values"].shape == pixels.shape
        grid = torch.as_tensor(want_img["image_grid_thw"]).tolist()
        assert batch["image_grid_thw"].tolist() == grid


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_batch_equals_the_processors_padded_batch(family, tmp_path, h, monkeypatch):
    """Rows with two images and with one, left padded for generation: every tensor equals
    what the model's own processor returns for the same prompts and images, padded left
    (Mllama: its cross-attention mask over the padded rows and the images padded per row)."""
    bundle = _bundle(save_tiny(family, tmp_path / family, h.corpus))
    two = replace(
        h.image_example(0, color="blue"),
        prompt="Given <image> and <image>. Q: what colors?\nA:",
        images=(h.png("blue", size=40), _png(48, 24, "red")),
    )
    one = replace(h.image_example(1, color="red"), images=(_png(24, 40, "red"),))
    collator = Collator(bundle, 256, for_generation=True)
    batch = collator([two, one])
    own = own_processor(family, bundle, monkeypatch)
    marker = collator.layout.marker_text()
    texts = [e.prompt.replace("<image>", marker) for e in (two, one)]
    pics = [[Image.open(io.BytesIO(b)).convert("RGB") for b in e.images] for e in (two, one)]
    flat = pics if collator.layout.nested_images else [p for row in pics for p in row]
    want = own(text=texts, images=flat, padding=True, padding_side="left", return_tensors="pt")
    assert set(model_inputs(batch)) == set(want), sorted(want)
    for key, value in want.items():
        assert batch[key].tolist() == torch.as_tensor(value).tolist(), key


def test_gemma3_image_tokens_attend_each_other_both_ways(tmp_path, h):
    """token_type_ids make Gemma 3's image block bidirectional: an image token's output
    depends on the later image tokens (not so in a causal pass); nothing before it changes."""
    bundle = _bundle(save_tiny("gemma3", tmp_path / "gemma3", h.corpus))
    bundle.model.eval()
    inputs = model_inputs(Collator(bundle, 256)([h.image_example(color="blue")]))
    causal = {k: v for k, v in inputs.items() if k != "token_type_ids"}
    with torch.no_grad():
        ours, plain = bundle.model(**inputs).logits, bundle.model(**causal).logits
    image = (inputs["token_type_ids"][0] == 1).nonzero().flatten().tolist()
    assert len(image) == 4 and image == list(range(image[0], image[0] + 4))
    first, last = image[0], image[-1]
    torch.testing.assert_close(ours[0, :first], plain[0, :first])
    for pos in range(first, last):  # each image token but the last sees a later one
        assert not torch.allclose(ours[0, pos], plain[0, pos], atol=1e-4), pos


@pytest.mark.parametrize("family", FAMILIES)
def test_left_truncation_stops_at_the_image_block(family, tmp_path, h):
    from generalist.errors import DataError

    bundle = _bundle(save_tiny(family, tmp_path / family, h.corpus))
    ex = h.image_example()  # "Instructions: ... Given <image>. Q: ...": text before the image
    collator = Collator(bundle, 512)
    full = collator.encode(ex)
    guarded = {bundle.image_token_id, *collator.layout.protected_ids(bundle.tokenizer)}
    start = next(i for i, t in enumerate(full.input_ids) if t in guarded)
    head = 0  # leading bos tokens stay (Mllama's processor and tokenizer each add one)
    while full.input_ids[head] == bundle.tokenizer.bos_token_id:
        head += 1
    fits = Collator(bundle, full.length - (start - head)).encode(ex)
    assert fits.input_ids == full.input_ids[:head] + full.input_ids[start:]
    assert fits.labels[-3:] == full.labels[-3:]  # the target is whole
    with pytest.raises(DataError, match="would cut an image"):
        Collator(bundle, full.length - (start - head) - 1).encode(ex)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_text_row_beside_its_dummy_scores_as_alone(family, tmp_path, h):
    """A text-only row with its masked dummy image scores as it does alone without one; the
    image row as it does alone (Gemma 3: the dummy block attends nothing real). Mllama's
    cross-attention adds to rows that attend no image: there the text row reads the same
    beside its dummy (the processor's padding image) as beside a real image's row."""
    bundle = _bundle(save_tiny(family, tmp_path / family, h.corpus))
    bundle.model.eval()
    img, txt = h.image_example(color="blue"), h.text_example(answer="no")
    mixed = Collator(bundle, 256)([img, txt])
    only_txt = Collator(bundle, 256)([txt])
    alone_txt = Collator(bundle, 256, dummy_images="off")([txt])
    alone_img = Collator(bundle, 256)([img])
    with torch.no_grad():
        m = bundle.model(**model_inputs(mixed)).logits
        d = bundle.model(**model_inputs(only_txt)).logits
        t = bundle.model(**model_inputs(alone_txt)).logits
        i = bundle.model(**model_inputs(alone_img)).logits
    n = t.shape[1]
    if family == "mllama":  # its cross-attention layers run on text rows beside any image
        assert not torch.allclose(d[0, :n], t[0], atol=1e-3)
        t = d  # a text row reads the same beside a real image as beside its dummy
    torch.testing.assert_close(d[0, :n], t[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m[1, :n], t[0, :n], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m[0, : i.shape[1]], i[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_learns_generates_scores_exports_and_reloads(family, tmp_path, h):
    path = save_tiny(family, tmp_path / family, h.corpus)
    bundle = _bundle(path, target_modules=ALL_LINEAR)
    assert bundle.config.name_or_path == str(path)
    examples = [
        replace(h.image_example(0, color="blue"), images=(h.png("blue", size=64),)),
        h.text_example(answer="no"),
        h.image_example(1, color="red"),
    ]
    batch = Collator(bundle, 256)(examples)
    losses = h.train(bundle, batch, steps=25, lr=3e-2)
    assert losses[-1] < 0.1 * losses[0], losses
    predictor = HFPredictor(bundle, max_length=256, max_new_tokens=4)
    assert predictor.generate(examples) == ["blue", "no", "red"]
    assert predictor.generate(examples[1:2]) == ["no"]  # a text-only batch: its dummy image
    scores = predictor.score_options([replace(examples[2], options=("blue", "red", "green"))])
    assert max(range(3), key=scores[0].__getitem__) == 1
    save_model_dir(bundle, tmp_path / "ckpt" / "model")
    out = export(tmp_path / "ckpt", tmp_path / "out")
    from transformers import AutoModelForImageTextToText

    plain = AutoModelForImageTextToText.from_pretrained(out).eval()
    assert type(plain) is type(bundle.base_model)
    gen = Collator(bundle, 256, for_generation=True)(examples)
    kw = {"max_new_tokens": 4, "min_new_tokens": 4, "do_sample": False}
    with torch.no_grad():
        a = plain.generate(**model_inputs(gen), **kw)
        b = bundle.model.generate(**model_inputs(gen), **kw)
    assert a.tolist() == b.tolist()


def _png(width, height, color="blue"):
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


class _Spy:
    """The bundle's processor, recording the image sizes and keywords each call gets."""

    def __init__(self, processor):
        self.processor, self.sizes, self.kwargs = processor, [], []

    def __call__(self, text=None, images=None, **kwargs):
        flat = [
            im for group in images or [] for im in (group if isinstance(group, list) else [group])
        ]
        self.sizes += [im.size for im in flat]
        self.kwargs.append(kwargs)
        return self.processor(text=text, images=images, **kwargs)

    def __getattr__(self, name):
        return getattr(self.processor, name)


def _capped_bundle(family, tmp_path, h, **caps):
    path = save_tiny(family, tmp_path / family, h.corpus)
    cfg = ModelConfig.parse({"name_or_path": str(path), **caps})
    return build_model(cfg, LoraSettings.parse({"r": 4}))


def test_max_pixels_downscales_before_the_processor(tmp_path, h):
    bundle = _capped_bundle("qwen2_5_vl", tmp_path, h, max_pixels=32 * 32)
    big = replace(h.image_example(), images=(_png(400, 200),))
    small = replace(h.image_example(1), images=(_png(20, 20),))
    collator = Collator(bundle, 512)
    collator.processor = spy = _Spy(bundle.processor)
    batch = collator([big, small])
    assert spy.sizes == [(45, 22), (20, 20)]  # 400x200 -> 990 px <= 1024, aspect 2:1 kept
    uncapped = Collator(_capped_bundle("qwen2_5_vl", tmp_path / "b", h), 512)([big])
    assert batch["image_grid_thw"][0].prod() < uncapped["image_grid_thw"][0].prod()


def test_max_tiles_caps_mllama_tiles_and_keeps_the_models_aspect_ids(tmp_path, h):
    bundle = _capped_bundle("mllama", tmp_path, h, max_tiles=2)
    wide, tall = (
        replace(h.image_example(i), images=(_png(*s),)) for i, s in ((0, (32, 16)), (1, (16, 32)))
    )
    huge = replace(h.image_example(2), images=(_png(64, 64),))  # 4 tiles uncapped
    collator = Collator(bundle, 256)
    collator.processor = spy = _Spy(bundle.processor)
    batch = collator([wide, tall, huge])
    assert spy.kwargs[0] == {"max_image_tiles": 2}
    assert batch["pixel_values"].shape[2] == 4  # the model reads its own max_num_tiles
    # 1x2, 2x1, and the square image in one tile (2 tiles cannot be square): at most 2
    assert batch["aspect_ratio_mask"].sum(-1).flatten().tolist() == [2, 2, 1]
    own = bundle.processor(text=["<|image|>"] * 2, images=[[_image(wide)], [_image(tall)]])
    assert (
        batch["aspect_ratio_ids"][:2].tolist() == torch.as_tensor(own["aspect_ratio_ids"]).tolist()
    )
    assert batch["cross_attention_mask"][0].sum(-1).max() == 2  # two tiles attended
    with torch.no_grad():
        assert torch.isfinite(bundle.model(**model_inputs(batch)).loss)
    free = Collator(_capped_bundle("mllama", tmp_path / "b", h), 256)([huge])
    assert free["aspect_ratio_mask"].sum().item() == 4


@pytest.mark.parametrize(
    ("family", "tiles", "message"),
    [("gemma3", 2, "does not tile its images"), ("mllama", 5, "set at most 4")],
)
def test_max_tiles_beyond_what_the_family_tiles_is_a_config_error(
    family, tiles, message, tmp_path, h
):
    from generalist.errors import ConfigError

    bundle = _capped_bundle(family, tmp_path, h, max_tiles=tiles)
    with pytest.raises(ConfigError, match=f"model.max_tiles: .*{message}"):
        Collator(bundle, 256)


def test_flops_count_every_mllama_tile_the_tower_runs(tmp_path, h):
    from generalist.train.flops import batch_work

    bundle = _bundle(save_tiny("mllama", tmp_path / "mllama", h.corpus))
    batch = Collator(bundle, 256)([h.image_example(), h.text_example()])
    work = batch_work(bundle.base_model.config, batch, bundle.image_token_id)
    # 2 rows x 1 image slot x 4 tiles x (2x2 patches of 8 px in a 16 px tile + CLS)
    assert work["vision"].tokens == 2 * 4 * 5 and work["vision"].patches == 2 * 4 * 4
