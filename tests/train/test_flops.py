"""The MFU formula (generalist.train.flops) against a hand count for a tiny LLaVA with LoRA, and
against torch's own FLOP counter over a real forward + backward of the same model."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from generalist.batching.collate import Collator
from generalist.batching.losses import example_losses
from generalist.batching.model_inputs import model_inputs
from generalist.catalog.records import Example
from generalist.model.build import build_model
from generalist.model.config import LoraSettings, ModelConfig
from generalist.train import flops as F

CORPUS = [
    "Instructions: answer the question about the image.",
    "Given <image>. Q: what color is the shape? A: red blue green",
    "Q: is there a circle in the image? A: yes no",
] * 4
D, FF, LAYERS, R, PATCH = 32, 48, 2, 4, 16  # width, MLP width, layers per tower, LoRA rank
TINY = {"vision_layers": LAYERS, "text_layers": LAYERS, "hidden_size": D, "heads": 2}
TINY |= {"intermediate_size": FF, "image_size": 32, "patch_size": PATCH, "vocab_size": 200}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    # eager attention: explicit matmuls that torch's FLOP counter sees (its CPU sdpa kernel
    # is not counted)
    model_cfg = ModelConfig.parse({"tiny": TINY, "attn_implementation": "eager"})
    lora = LoraSettings.parse({"r": R, "dropout": 0.0})  # q/k/v/o; the projector trained
    work = tmp_path_factory.mktemp("flops")
    return build_model(model_cfg, lora, texts_for_tokenizer=CORPUS, work_dir=work)


def _batch(bundle):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buf, format="PNG")
    prompt = "Instructions: answer the question about the image.\nGiven <image>. Q: what color?\nA:"
    example = Example(task="vqa", id="a", prompt=prompt, target="red", images=(buf.getvalue(),))
    return Collator(bundle, 64)([example])  # one row: no padding, one image


def test_part_costs_and_step_flops_match_a_hand_count(bundle) -> None:
    vocab = len(bundle.tokenizer)
    costs = F.part_costs(bundle.model)
    # CLIP: q, k, v, out (D x D) and fc1, fc2 (D x FF) per layer; the patch conv 3 x 16 x 16 x D
    vision = LAYERS * (4 * D * D + 2 * D * FF)
    assert costs["vision"] == F.PartCost(vision, 0, LAYERS, D, patch_weights=3 * PATCH**2 * D)
    # the projector (linear_1, linear_2), trained in full (lora.modules_to_save); its idle
    # original copy is not counted
    assert costs["connector"] == F.PartCost(2 * D * D, 2 * D * D, 0, 0)
    # Llama: q, k, v, o and gate, up, down per layer, the LM head; LoRA A (R x D), B (D x R)
    lora = LAYERS * 4 * (R * D + D * R)
    language = LAYERS * (4 * D * D + 3 * D * FF) + D * vocab + lora
    assert costs["language"] == F.PartCost(language, lora, LAYERS, D)

    batch = _batch(bundle)
    seq = int(batch["attention_mask"].sum())
    positions = (32 // PATCH) ** 2 + 1  # 4 patches + CLS
    work = F.batch_work(bundle.base_model.config, batch, bundle.image_token_id)
    assert work["language"] == F.PartTokens(seq, seq * seq)
    assert work["vision"] == F.PartTokens(positions, positions**2, positions - 1)
    assert work["connector"] == F.PartTokens(positions - 1)  # the LM's image tokens

    # by hand: the frozen tower forward only; the projector 3x; the LM 2x (frozen weights pass
    # gradients to the LoRA factors and the projector) plus LoRA's weight gradients; attention
    # 4 D s^2 per layer forward, 3x that where gradients flow
    tower = 2 * vision * positions + 2 * 3 * PATCH**2 * D * (positions - 1)
    tower += 4 * LAYERS * D * positions**2
    projector = 3 * 2 * (2 * D * D) * (positions - 1)
    lm = 2 * 2 * language * seq + 2 * lora * seq + 3 * 4 * LAYERS * D * seq**2
    assert F.step_flops(costs, work) == tower + projector + lm
    forward = tower + 2 * (2 * D * D) * (positions - 1) + 2 * language * seq
    forward += 4 * LAYERS * D * seq**2
    assert F.forward_flops(costs, work) == forward
    lm_forward = 2 * language * seq + 4 * LAYERS * D * seq**2
    assert 2.0 < lm / lm_forward < 2.5  # the LoRA factor of the language model, not 3


def test_step_flops_match_torch_flop_counter(bundle) -> None:
    """torch counts what autograd really runs: the formula agrees except for the projector's
    first matmul, whose input (the frozen tower's output) needs no gradient."""
    batch = _batch(bundle)
    costs = F.part_costs(bundle.model)
    work = F.batch_work(bundle.base_model.config, batch, bundle.image_token_id)
    inputs = model_inputs(batch)
    labels = inputs.pop("labels")
    bundle.model.train()
    with FlopCounterMode(display=False) as counter:
        sums, _ = example_losses(bundle.model(**inputs).logits, labels)
        sums.sum().backward()
    counted = counter.get_total_flops()
    gap = 2 * (D * D) * work["connector"].tokens  # linear_1's unneeded input gradient
    assert F.step_flops(costs, work) - counted == gap
    assert gap / counted < 0.01


def test_frozen_model_and_full_training_factors() -> None:
    cost = {"language": F.PartCost(weights=1000, trainable=1000)}
    work = {"language": F.PartTokens(10)}
    assert F.step_flops(cost, work) == 6 * 1000 * 10  # the usual 6 N per token
    frozen = {"vision": F.PartCost(500, 0), "language": F.PartCost(1000, 10)}
    work = {"vision": F.PartTokens(4, patches=4), "language": F.PartTokens(10)}
    # the tower before anything trained: forward only; the language model: 2x + weight grads
    assert F.step_flops(frozen, work) == 2 * 500 * 4 + 4 * 1000 * 10 + 2 * 10 * 10
    assert F.flows_backward(frozen) == {"vision": False, "connector": False, "language": True}


def test_dense_peaks_are_the_datasheet_dense_figures() -> None:
    assert F.dense_bf16_peak("NVIDIA H200") == 989e12  # not the 1979 sparse figure
    assert F.dense_bf16_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert F.dense_bf16_peak("Some CPU") is None
    assert F.part_of("base_model.model.model.multi_modal_projector.original_module.x") is None
    assert F.part_of("model.visual.merger.mlp.0") == "connector"
    assert F.part_of("model.visual.blocks.0.attn.qkv") == "vision"


def test_bench_reports_a_slow_rate_as_positive_to_four_significant_digits() -> None:
    import torch

    from generalist.bench.train import mfu_figures, significant

    # a tiny model on a loaded CPU: 1.234567 MFLOP in 2 s; 4 decimals of TFLOP/s read 0.0
    cpu = mfu_figures(1.234567e6, 2.0, torch.device("cpu"))
    assert cpu == {"model_tflops_per_s": 6.173e-7}  # CUDA-only figures absent
    assert significant(812.34567) == 812.3 and significant(0.000123456) == 0.0001235
    assert significant(0.0) == 0.0
