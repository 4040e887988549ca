"""The tensors of a batch that a model's forward takes, and moving them to a device."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MODEL_KEYS = (  # what forward() takes; the image keys are those HF VLM processors return
    "input_ids",
    "attention_mask",
    "position_ids",  # packed batches: positions restart per example
    "labels",
    "token_type_ids",
    "mm_token_type_ids",
    "pixel_values",
    "image_sizes",
    "image_grid_thw",
    "pixel_attention_mask",
    "aspect_ratio_ids",
    "aspect_ratio_mask",
    "cross_attention_mask",
    "batch_num_images",
)


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The tensors of a batch that the model's forward takes (drops task names, ids)."""
    return {k: v for k, v in batch.items() if k in MODEL_KEYS}


def to_device(
    batch: dict[str, Any], device: torch.device | str, float_dtype: torch.dtype | None = None
) -> dict[str, Any]:
    """The model's tensors of `batch` on `device`; floating ones (pixels) cast to `float_dtype`
    (the training or model precision) when given. A dict value (a packed Gemma 3 batch's
    attention mask per layer type) is moved entry by entry."""
    out: dict[str, Any] = {}
    for key, value in model_inputs(batch).items():
        if isinstance(value, dict):
            out[key] = {k: _moved(v, device, float_dtype) for k, v in value.items()}
        else:
            out[key] = _moved(value, device, float_dtype)
    return out


def _moved(
    value: torch.Tensor, device: torch.device | str, float_dtype: torch.dtype | None
) -> torch.Tensor:
    value = value.to(device, non_blocking=True)
    if float_dtype is not None and value.is_floating_point():
        value = value.to(float_dtype)
    return value
