"""Losses over a batch's labels (prompt, padding and dummy-image positions are IGNORE_INDEX):
one masked cross-entropy serves the training loss, the per-task losses and option scoring."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from generalist.batching.padding import IGNORE_INDEX


def shifts_labels(model: torch.nn.Module) -> bool:
    """Decoder-only models predict token t+1 at position t; encoder-decoders align directly."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return False
    return getattr(config, "use_decoder_only_language_model", True) is not False


def example_losses(
    logits: torch.Tensor, labels: torch.Tensor, shift: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of token losses, number of target tokens) per example; prompts/padding are -100.

    Computed here rather than by the model so that one cross-entropy gives both the training
    loss and the per-task losses.
    """
    if logits.shape[1] > labels.shape[1]:  # models that prepend query tokens (BLIP-2)
        logits = logits[:, -labels.shape[1] :]
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    # (batch x positions, vocab) rows, as transformers' own loss: the (batch, vocab, positions)
    # layout of a transposed view is several times slower on CPU.
    token = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(labels.shape)
    mask = labels != IGNORE_INDEX
    return (token * mask).sum(dim=1), mask.sum(dim=1)
