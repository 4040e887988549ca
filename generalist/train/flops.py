"""Model FLOPs of a training step, and model FLOPs utilisation (MFU).

The formula (per part of the model: language model, vision tower, connector), with W the weights
of the part's matrix multiplies (nn.Linear, and the patch embedding convolution: a matmul over
each patch), T those of them that are trained (LoRA A and B, unfrozen layers), n the tokens the
part processes, and per attention layer of width d (heads x head_dim) over sequences of s tokens:

    forward      2 W n                     + 4 d sum(s^2) per layer   (QK^T and AV, full s^2)
    backward     2 W n  for the activations' gradients, if gradients flow through the part
                 2 T n  for the weights' gradients: a frozen weight does no weight-grad matmul
                 8 d sum(s^2) per layer, if gradients flow through the part

So a part trained in full costs 3x its forward (the usual 6 N per token), a frozen part that
gradients pass through (a language model under LoRA) about 2x ("the LoRA factor"), and a frozen
part upstream of everything trained (a frozen vision tower) 1x. Gradients flow through a part if
it or a part before it (vision -> connector -> language model) has trainable weights; the few
matmuls below a part's first trainable weight are counted too (at most one layer's worth).
Following PaLM (arXiv 2204.02311, appendix B) the attention term counts the full s^2 (no causal
halving), and recomputation under gradient checkpointing is not counted (MFU, not HFU).

Tokens: the language model's are the attended positions of the batch (padding and the blank
images' tokens excluded, so padding lowers MFU); the vision tower's are each image's positions
(CLS included; the patch convolution runs at patches only) over every image it runs, blank
images of text-only examples too (the tower really runs them); the connector's the image tokens
it hands to the language model. The connector's first matmul is counted with an input gradient
it does not need when the tower is frozen (2 x its weights x tokens: tests pin that gap).
MFU = model FLOPs per second / the device's dense bf16 peak (datasheet; `measured_matmul_peak`
gives the ceiling a large bf16 matmul really reaches on the machine at hand).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# Dense (not the 2:4 sparse) bf16 tensor-core peaks, FLOP/s, from the vendors' datasheets.
PEAK_BF16_DENSE = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}
PART_ORDER = ("vision", "connector", "language")  # the direction activations flow
CONNECTOR_NAMES = ("multi_modal_projector", "qformer", "language_projection", "merger")
VISION_NAMES = ("vision_tower", "vision_model", "visual", "vision_encoder")


@dataclass(frozen=True)
class PartCost:
    """One part as the formula sees it: matmul weights (the patch convolution's apart: it runs
    at patch positions only, not at a CLS token), trained weights, attention shape."""

    weights: int
    trainable: int
    layers: int = 0
    attention_width: int = 0
    patch_weights: int = 0
    patch_trainable: int = 0


@dataclass(frozen=True)
class PartTokens:
    """What one step feeds a part: tokens, the sum of squared attention sequence lengths, and the
    patch positions (tokens less CLS; vision towers only)."""

    tokens: int
    seq_sq: int = 0
    patches: int = 0


def part_flops(cost: PartCost, work: PartTokens, backward: bool) -> float:
    """Training FLOPs of one part (the module docstring's formula)."""
    matmul = 2.0 * (cost.weights * work.tokens + cost.patch_weights * work.patches)
    attention = 4.0 * cost.layers * cost.attention_width * work.seq_sq
    total = matmul + attention
    total += 2.0 * (cost.trainable * work.tokens + cost.patch_trainable * work.patches)
    if backward:
        total += matmul + 2.0 * attention
    return total


def flows_backward(costs: Mapping[str, PartCost]) -> dict[str, bool]:
    """Per part: whether gradients pass through it (it, or a part before it, is trained)."""
    seen, out = False, {}
    for name in PART_ORDER:
        cost = costs.get(name)
        seen = seen or (cost is not None and cost.trainable + cost.patch_trainable > 0)
        out[name] = seen
    return out


def step_flops(costs: Mapping[str, PartCost], work: Mapping[str, PartTokens]) -> float:
    """Model FLOPs of one training step over all parts."""
    backward = flows_backward(costs)
    return sum(part_flops(costs[n], work[n], backward[n]) for n in costs if n in work)


def forward_flops(costs: Mapping[str, PartCost], work: Mapping[str, PartTokens]) -> float:
    """The forward FLOPs alone (step_flops / forward_flops is the backward factor)."""
    frozen = {n: replace(c, trainable=0, patch_trainable=0) for n, c in costs.items()}
    return sum(part_flops(frozen[n], work[n], False) for n in frozen if n in work)


def part_of(name: str) -> str | None:
    """'vision', 'connector' or 'language' for a module path; None for the idle copy peft keeps
    of a modules_to_save module (original_module: it does not run)."""
    if ".original_module" in name:
        return None
    parts = name.split(".")
    if any(p in CONNECTOR_NAMES for p in parts):
        return "connector"
    if any(p in VISION_NAMES for p in parts):
        return "vision"
    return "language"


def _matmul_weight(module: torch.nn.Module) -> torch.Tensor | None:
    if isinstance(module, torch.nn.Linear | torch.nn.Conv2d | torch.nn.Conv3d):
        return module.weight
    return None


def _attention(config: PretrainedConfig | None) -> tuple[int, int]:
    """(layers, heads x head_dim) of a transformers config (text or vision)."""
    if config is None:
        return 0, 0
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "depth", 0)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "num_heads", 0)
    width = getattr(config, "hidden_size", 0) or 0
    if "embed_dim" in config.to_dict():  # Qwen2-VL's tower: hidden_size is its output width
        width = config.embed_dim
    head_dim = getattr(config, "head_dim", None) or (width // heads if heads else 0)
    return int(layers), int(heads * head_dim)


def part_costs(model: torch.nn.Module) -> dict[str, PartCost]:
    """The model's parts (present ones only) with their matmul weights, trained weights and
    attention shapes. Works on a peft model or a plain transformers one."""
    weights: dict[str, int] = {}
    patch: dict[str, int] = {}
    trainable: dict[str, int] = {}
    patch_trainable: dict[str, int] = {}
    for name, module in model.named_modules():
        weight = _matmul_weight(module)
        part = part_of(name) if weight is not None else None
        if part is None or weight is None:
            continue
        n = _numel(weight)
        linear = isinstance(module, torch.nn.Linear)
        into, trained = (weights, trainable) if linear else (patch, patch_trainable)
        into[part] = into.get(part, 0) + n
        trained[part] = trained.get(part, 0) + (n if weight.requires_grad else 0)
    base = getattr(model, "get_base_model", lambda: model)()
    config = base.config
    shapes = {
        "language": _attention(getattr(config, "text_config", None) or config),
        "vision": _attention(getattr(config, "vision_config", None)),
    }
    out = {}
    for part in sorted(set(weights) | set(patch)):
        layers, width = shapes.get(part, (0, 0))
        out[part] = PartCost(
            weights.get(part, 0),
            trainable.get(part, 0),
            layers,
            width,
            patch.get(part, 0),
            patch_trainable.get(part, 0),
        )
    return out


def _numel(weight: torch.Tensor) -> int:
    shape = getattr(weight, "ds_shape", None)  # a ZeRO-3 partitioned weight keeps its shape here
    return int(torch.Size(shape).numel()) if shape is not None else int(weight.numel())


def batch_work(
    config: PretrainedConfig, batch: Mapping[str, Any], image_token_id: int | None
) -> dict[str, PartTokens]:
    """Per part, the PartTokens of one micro-batch (see the module docstring for the counts)."""
    mask = batch["attention_mask"]
    lengths = mask.sum(dim=1).tolist()
    work = {"language": PartTokens(int(sum(lengths)), int(sum(s * s for s in lengths)))}
    per_image, cls = vision_positions(config, batch)
    if per_image:
        patches = sum(per_image) - cls * len(per_image)
        work["vision"] = PartTokens(sum(per_image), sum(p * p for p in per_image), patches)
        ids = batch["input_ids"]
        image_tokens = int((ids == image_token_id).sum()) if image_token_id is not None else 0
        work["connector"] = PartTokens(image_tokens or len(per_image))
    return work


def vision_positions(config: PretrainedConfig, batch: Mapping[str, Any]) -> tuple[list[int], int]:
    """(positions of each image the vision tower runs, CLS positions per image among them)."""
    if batch.get("image_grid_thw") is not None:  # Qwen2-VL: t x h x w patches per image
        return [int(t * h * w) for t, h, w in batch["image_grid_thw"].tolist()], 0
    pixels = batch.get("pixel_values")
    vision = getattr(config, "vision_config", None)
    if pixels is not None and vision is not None and pixels.ndim == 6:  # Mllama's tiles
        rows, images, tiles = pixels.shape[:3]  # the tower runs every tile, padding too
        side = int(vision.patch_size)
        per_tile = (pixels.shape[-2] // side) * (pixels.shape[-1] // side) + 1  # + CLS
        return [tiles * per_tile] * int(rows * images), int(tiles)
    if pixels is None or vision is None or pixels.ndim not in (4, 5):
        return [], 0
    patch = int(vision.patch_size)
    cls = 1 if vision.model_type in ("clip_vision_model", "blip_2_vision_model") else 0
    per = (pixels.shape[-2] // patch) * (pixels.shape[-1] // patch) + cls
    # tiles (Idefics3, LLaVA-NeXT: [rows or images, tiles, 3, H, W]): the all-zero padding
    # tiles never reach the tower
    n = pixels.shape[0] if pixels.ndim == 4 else pixels.flatten(2).ne(0).any(-1).sum()
    return [per] * int(n), cls


def add_work(total: dict[str, PartTokens], more: Mapping[str, PartTokens]) -> None:
    """total += more, part by part (a step's micro-batches summed)."""
    for name, w in more.items():
        old = total.get(name, PartTokens(0, 0))
        total[name] = PartTokens(
            old.tokens + w.tokens, old.seq_sq + w.seq_sq, old.patches + w.patches
        )


def dense_bf16_peak(device_name: str) -> float | None:
    """The datasheet dense bf16 peak (FLOP/s) of a GPU by its name, if known."""
    return next((v for k, v in PEAK_BF16_DENSE.items() if k in device_name), None)


def measured_matmul_peak(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """bf16 FLOP/s of an n x n x n matmul on random data, timed with CUDA events (mean of
    `repeats` after 3 warm-ups): the ceiling this GPU really reaches."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize(device)
    return 2.0 * n**3 * repeats / (start.elapsed_time(end) / 1e3)
