"""The model's GPU settings: `model.attn_implementation` and `model.liger_kernel`.

    attn_implementation  sdpa (default: torch's scaled_dot_product_attention, which picks its
                         flash / memory-efficient kernels on a GPU), flash_attention_2 (needs the
                         flash-attn package and a CUDA GPU), eager (plain matmuls: a reference)
    liger_kernel         Liger's Triton kernels (RMSNorm, RoPE, SwiGLU, LayerNorm) patched into
                         the model, for the families Liger supports (llama, qwen2, qwen2_vl,
                         gemma3, paligemma, llava, mllama, ...); needs liger-kernel and CUDA.
                         Its fused linear cross-entropy is left off: our per-example losses
                         (generalist.batching.losses) need the logits.

`check_kernel_packages` runs in preflight (packages only, no torch import); `apply_kernels` runs
after the model is built, where the device is known. Either raises a one-line ConfigError
naming the key and what to do.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from generalist.errors import ConfigError
from generalist.model.config import ModelConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_kernel_packages(cfg: ModelConfig) -> None:
    """The packages the requested settings need are installed (a ConfigError otherwise)."""
    if cfg.attn_implementation == "flash_attention_2" and not _installed("flash_attn"):
        raise ConfigError(
            "config key 'model.attn_implementation': flash_attention_2 needs the flash-attn "
            "package (pip install flash-attn, on a CUDA machine); use sdpa (the default)"
        )
    if cfg.liger_kernel and not _installed("liger_kernel"):
        raise ConfigError(
            "config key 'model.liger_kernel': needs the liger-kernel package "
            "(pip install liger-kernel, on a CUDA machine); or set it to false"
        )


def _needs_cuda(key: str, what: str) -> None:
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"config key {key!r}: {what} runs on CUDA GPUs only and none is available here; "
            f"use the default (sdpa, no Liger) on this machine"
        )


def apply_kernels(model: PreTrainedModel, cfg: ModelConfig) -> PreTrainedModel:
    """Set the attention implementation and patch in Liger kernels on the built (base) model."""
    check_kernel_packages(cfg)
    if cfg.attn_implementation == "flash_attention_2":
        _needs_cuda("model.attn_implementation", "flash_attention_2")
    if cfg.liger_kernel:
        _needs_cuda("model.liger_kernel", "Liger's Triton kernels")
    current = getattr(model.config, "_attn_implementation", None)
    if current != cfg.attn_implementation:
        try:
            model.set_attn_implementation(cfg.attn_implementation)
        except (ValueError, ImportError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"config key 'model.attn_implementation': {cfg.attn_implementation} is not "
                f"available for {type(model).__name__} ({first}); use sdpa or eager"
            ) from None
    if cfg.liger_kernel:
        _apply_liger(model)
    return model


def _apply_liger(model: PreTrainedModel) -> None:
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    model_type = getattr(model.config, "model_type", None)
    apply = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
    if apply is None:  # Liger itself would only log this and carry on without kernels
        supported = ", ".join(sorted(MODEL_TYPE_TO_APPLY_LIGER_FN))
        raise ConfigError(
            f"config key 'model.liger_kernel': Liger has no kernels for model type "
            f"{model_type!r} (supported: {supported}); set it to false"
        )
    import inspect

    wanted = {"cross_entropy": False, "fused_linear_cross_entropy": False}
    params = inspect.signature(apply).parameters
    apply(model=model, **{k: v for k, v in wanted.items() if k in params})
