"""A CPU stand-in for the flash-attn kernels, so that transformers' own flash_attention_2 path runs
in tests without a GPU: its mask functions, its packed-sequence detection from position_ids, its
cu_seqlens, its unpadding. Only the two kernels are replaced (flash_attn_func and
flash_attn_varlen_func, with flash-attn's signatures), each computed with torch's sdpa one
sequence at a time. On a GPU, launch/gpu_check.sh runs the real kernel."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import modeling_flash_attention_utils as fa_utils


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None, causal: bool
) -> torch.Tensor:
    """One sequence: q [L, H, D], k and v [L, H_kv, D] -> [L, H, D]."""
    groups = q.shape[1] // k.shape[1]  # grouped-query attention: repeat the kv heads
    k, v = (t.repeat_interleave(groups, dim=1) for t in (k, v))
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=causal, scale=scale
    )
    return out.transpose(0, 1)


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    deterministic: bool = False,
) -> torch.Tensor:
    """[B, L, H, D] rows of equal length, each its own sequence."""
    assert dropout_p == 0.0 and window_size == (-1, -1) and softcap == 0.0
    return torch.stack(
        [_attend(q[b], k[b], v[b], softmax_scale, causal) for b in range(q.shape[0])]
    )


def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    deterministic: bool = False,
) -> torch.Tensor:
    """[total, H, D] sequences one after another, cut at cu_seqlens."""
    assert dropout_p == 0.0 and window_size == (-1, -1) and softcap == 0.0
    assert torch.equal(cu_seqlens_q, cu_seqlens_k)
    spans = list(itertools.pairwise(cu_seqlens_q.tolist()))
    assert max(b - a for a, b in spans) == int(max_seqlen_q)
    return torch.cat([_attend(q[a:b], k[a:b], v[a:b], softmax_scale, causal) for a, b in spans])


@contextmanager
def flash_attention(model: torch.nn.Module) -> Iterator[list[list[int]]]:
    """Run `model` on transformers' flash_attention_2 path with the CPU kernels inside the block.
    Yields the list of each varlen call's cu_seqlens (to show the packed rows were cut)."""
    calls: list[list[int]] = []

    @functools.wraps(flash_attn_varlen_func)  # transformers reads the kernel's signature
    def varlen(*args, **kwargs):
        calls.append(kwargs["cu_seqlens_q"].tolist())
        return flash_attn_varlen_func(*args, **kwargs)

    before = model.config._attn_implementation
    saved = fa_utils._lazy_imports, fa_utils._loaded_implementation
    fa_utils._lazy_imports = lambda *a, **k: (
        flash_attn_func,
        varlen,
        None,
        fa_utils._pad_input,
        fa_utils._unpad_input,
    )
    fa_utils._loaded_implementation = None
    model.config._attn_implementation = "flash_attention_2"
    try:
        yield calls
    finally:
        model.config._attn_implementation = before
        fa_utils._lazy_imports, fa_utils._loaded_implementation = saved
