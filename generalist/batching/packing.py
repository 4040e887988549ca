"""Packing (`batch.packing: true`): several examples in one row of at most `batch.max_tokens`
tokens, each attending only to itself, so a packed micro-batch computes exactly what the same
examples compute unpacked (per-example losses and gradients within float rounding; tested
against unpacked in fp32 for every family it accepts).

    row:       [ example a: tokens | dummy ][ example b: tokens ][ example c ... ][pad]
    positions:   0 1 2 ... n_a-1 .. m_a-1     0 1 ... n_b-1        0 1 ...        0 ..
    attention:  causal inside each example's block (a block-diagonal 4D additive mask that
                sdpa and eager take as is); a dummy image's tokens and the padding are
                attended by no real token, as unpacked (each padding position sees itself
                only, so no softmax row is empty)
    images:     every example's image tensors, in token order (the family's processor order)

Rows are filled by best-fit decreasing (`pack_lengths`), at most `max_tokens` tokens a row.
Losses come back per example (`packed_example_losses`), with the label shift inside each
example, so the global-token normalisation of generalist.train.step is unchanged.

Qwen2-VL / 2.5-VL / 3-VL (M-RoPE): each example's own rope index from the model's
get_rope_index, restarted per example, beside the text positions (`[4, rows, width]`).

Gemma 3: each image's soft tokens attend both ways inside their image, causal elsewhere, in
both of its layer types' masks (full and sliding window), built here per example.

LLaVA-NeXT / OneVision (anyres) and Idefics3 / SmolVLM (tiled): the model scatters each
image's features into its image tokens in order and computes each image's tiles from its own
image_sizes (and OneVision's batch_num_images, one count per example), so each example's own
tensors, joined in row order, are exact. PaliGemma: prefix-LM mask per example (`prefix_lm`).

flash_attention_2 / _3 (`varlen`): no mask at all; the row's positions, restarting per example,
are what transformers' flash path cuts into sequences (cu_seqlens from position_ids == 0) for
flash_attn_varlen_func, so each example attends causally to itself only. No mask is also why the
vision towers are unaffected: the cut comes from position_ids, which only the text model takes
(explicit cu_seq_lens kwargs would reach LLaVA's vision tower too). Gemma 3's and PaliGemma's
two-way blocks need a mask, so with flash they are refused.

Refused by `check_packable`, with a ConfigError naming the key:
- Mllama: a token that attends no image (the prompt before <|image|>, a text-only example)
  gets the mean of every image of its row in the cross-attention layers (the model's
  `_prepare_cross_attention_mask` zeroes such a row's mask instead of masking it), so a
  packed neighbour's images would change it. Unpacked it already depends on its batch-mates'
  image count (tests/model/test_packing.py shows both).
- BLIP-2 (Flan-T5, encoder-decoder): T5 takes one 2D encoder mask for both the encoder's
  self-attention and the decoder's cross-attention, so examples in one row would attend each
  other's encoder states.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from generalist.batching.padding import IGNORE_INDEX, Encoded
from generalist.batching.tiled_images import join_images
from generalist.errors import ConfigError, DataError

# the token layouts (generalist.batching.token_layout kinds) whose packing is exact
PACKABLE_KINDS = ("default", "text", "mrope", "gemma3", "anyres", "tiled", "paligemma")
# ... and those exact with flash attention's varlen kernel (no mask: causal inside each example)
VARLEN_KINDS = ("default", "text", "mrope", "anyres", "tiled")
MASKED_KERNELS = ("sdpa", "eager")
VARLEN_KERNELS = ("flash_attention_2", "flash_attention_3")
# M-RoPE's rope index of one example: transformers' get_rope_index(input_ids [1, n],
# mm_token_type_ids=..., image_grid_thw=...) -> ([3, 1, n] positions, deltas)
RopeIndex = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def check_packable(layout_kind: str, model_type: str, attn_implementation: str) -> None:
    """Raise a ConfigError naming `batch.packing` when this family or kernel cannot be packed
    exactly (checked before any data is read)."""
    fallback = "batch.packing: false (batch.max_tokens alone gives token-budget micro-batches)"
    if attn_implementation not in (*MASKED_KERNELS, *VARLEN_KERNELS):
        raise ConfigError(
            f"batch.packing: model.attn_implementation {attn_implementation!r} cannot keep "
            f"attention inside each packed example; use one of "
            f"{', '.join(MASKED_KERNELS + VARLEN_KERNELS)}, or {fallback}"
        )
    if layout_kind not in PACKABLE_KINDS:
        raise ConfigError(
            f"batch.packing: the {model_type!r} family (token layout {layout_kind!r}) cannot be "
            f"packed exactly (packable layouts: {', '.join(PACKABLE_KINDS)}); set {fallback}"
        )
    if attn_implementation in VARLEN_KERNELS and layout_kind not in VARLEN_KINDS:
        raise ConfigError(
            f"batch.packing: model.attn_implementation {attn_implementation!r} packs by position "
            f"ids without a mask, which cannot give the {model_type!r} family's two-way image "
            f"or prompt blocks; use sdpa or eager, or {fallback}"
        )


def rope_index_of(model: torch.nn.Module) -> RopeIndex:
    """The M-RoPE model's get_rope_index (on its inner model in transformers 5); it reads only
    the config, so ZeRO-3's partitioned weights do not matter."""
    inner = getattr(model, "model", model)
    return getattr(inner, "get_rope_index", None) or model.get_rope_index


def packing_options(model: torch.nn.Module, kind: str, soft_token_id: int | None) -> dict[str, Any]:
    """pack_batch's family options for `model` (its token layout `kind`, its attention kernel)."""
    varlen = {"varlen": True} if model.config._attn_implementation in VARLEN_KERNELS else {}
    if kind == "mrope":
        return {"rope_index": rope_index_of(model), **varlen}
    if varlen:
        return varlen
    if kind == "gemma3":
        text = model.config.get_text_config()
        return {"image_block_token": soft_token_id, "sliding_window": text.sliding_window}
    if kind == "paligemma":  # PaliGemma 2's Gemma 2 text model has sliding-window layers too
        text = model.config.get_text_config()
        return {"prefix_lm": True, "sliding_window": getattr(text, "sliding_window", None)}
    return {}


def pack_lengths(
    lengths: Sequence[int],
    capacity: int,
    imageless: Sequence[bool] | None = None,
    dummy: int = 0,
) -> list[list[int]]:
    """Indices of `lengths` in rows of at most `capacity` tokens, by best-fit decreasing: the
    longest first, each into the fullest row it fits; no two rows fit in one. Rows come back in
    the order of their first index, their indices ascending (deterministic; the stream's order is
    kept).

    `imageless[i]`: example i has no image of its own (lengths without its dummy image). A row
    of such examples only carries one dummy image of `dummy` tokens, so the vision tower runs
    (pack_batch keeps the first one's); a row with a real image carries none."""
    imageless = imageless or [False] * len(lengths)
    alone = [n + (dummy if imageless[i] else 0) for i, n in enumerate(lengths)]
    for i, n in enumerate(alone):
        if n > capacity:
            raise DataError(
                f"an example of {n} tokens (index {i} of its window) does not fit in "
                f"batch.max_tokens {capacity}; raise batch.max_tokens (at least batch.max_length "
                "plus a dummy image's tokens)"
            )
    rows: list[list[int]] = []
    used: list[int] = []  # tokens of each row, its dummy image included
    no_image: list[bool] = []  # the row has no image of its own (so it carries a dummy)
    for i in sorted(range(len(lengths)), key=lambda i: (-alone[i], i)):
        # each row's tokens with example i in it (an image drops the row's dummy)
        drop = 0 if imageless[i] else dummy
        loads = [used[r] + lengths[i] - (drop if no_image[r] else 0) for r in range(len(rows))]
        fits = [r for r, load in enumerate(loads) if load <= capacity]
        if fits:
            best = max(fits, key=lambda r: (loads[r], -r))  # the fullest row it fits
            rows[best].append(i)
            used[best] = loads[best]
            no_image[best] = no_image[best] and imageless[i]
        else:
            rows.append([i])
            used.append(alone[i])
            no_image.append(imageless[i])
    # an image dropping a row's dummy can leave two rows that now fit together: join them
    joined = True
    while joined:
        joined = False
        for a, b in itertools.combinations(range(len(rows)), 2):
            both = rows[a] + rows[b]
            dummy_left = dummy if all(imageless[i] for i in both) else 0
            if sum(lengths[i] for i in both) + dummy_left <= capacity:
                rows[a], joined = both, True
                del rows[b]
                break
    rows = [sorted(r) for r in rows]
    rows.sort(key=min)
    return rows


def budget_groups(lengths: Sequence[int], max_tokens: int, cap: int) -> list[list[int]]:
    """Token budget without packing: indices sorted by length, cut into micro-batches of as
    many examples as fit in `max_tokens` padded positions (rows x longest), at most `cap`
    each; groups in the order of their first index (as group_by_length)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    groups: list[list[int]] = []
    for i in order:
        if lengths[i] > max_tokens:
            raise DataError(
                f"an example of {lengths[i]} tokens does not fit in batch.max_tokens "
                f"{max_tokens}; raise batch.max_tokens"
            )
        last = groups[-1] if groups else None
        # sorted ascending: the new example is the longest of its group
        if last is not None and len(last) < cap and (len(last) + 1) * lengths[i] <= max_tokens:
            last.append(i)
        else:
            groups.append([i])
    groups.sort(key=min)
    return groups


def pack_batch(
    rows: Sequence[Sequence[Encoded]],
    pad_id: int,
    layout_kind: str,
    image_token_id: int,
    rope_index: RopeIndex | None = None,
    image_block_token: int | None = None,
    sliding_window: int | None = None,
    prefix_lm: bool = False,
    varlen: bool = False,
) -> dict[str, Any]:
    """A packed micro-batch from its rows' encoded examples (training layout only).

    Keys: input_ids, labels, position_ids, attention_mask (4D additive, float32: 0 where a
    query may attend, the dtype's minimum elsewhere), image tensors, example_index (which
    example of the batch each position belongs to, -1 on padding), real_tokens, task_names,
    example_ids (examples in row order).

    M-RoPE (`layout_kind` "mrope", `rope_index` the model's get_rope_index): position_ids are
    [4, rows, width], text positions first and then each example's own temporal / height /
    width index (transformers' packed convention); as the collator does, a dummy image goes
    only into a batch without a real image.

    Gemma 3 (`image_block_token` its image soft token, `sliding_window` its local layers'
    window): an image's soft tokens also attend to each other both ways, as the model's own
    mask does; attention_mask is then the model's per-layer-type dict ("full_attention",
    "sliding_attention": the same, and q - k < sliding_window).

    PaliGemma (`prefix_lm`): each example's prompt (its images, bos, prompt and "\n") attends
    both ways inside the example, its target causally, as the model's token_type_ids mask does
    unpacked; positions restart at 1 (PaliGemma counts from 1); token_type_ids 1 on targets.
    With a text config's `sliding_window` (PaliGemma 2) the mask is the per-layer-type dict.

    Flash attention (`varlen`): one row and no attention_mask; the restarting positions cut it.
    """
    if varlen and len(rows) != 1:
        raise ValueError(f"a varlen packed batch is one row (flash attention), not {len(rows)}")
    mrope = layout_kind == "mrope"
    # a row with an image of its own needs no dummy image, one without needs one (the first
    # example's); M-RoPE: none in a batch with a real image (as the collator, grid order)
    with_images = [any(e.images and not e.has_dummy for e in row) for row in rows]
    rows = [
        _one_dummy(row, has or (mrope and any(with_images)))
        for row, has in zip(rows, with_images, strict=True)
    ]
    width = max(sum(e.length for e in row) for row in rows)
    n_rows = len(rows)
    ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    labels = torch.full((n_rows, width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((4 if mrope else 1, n_rows, width), dtype=torch.long)
    index = torch.full((n_rows, width), -1, dtype=torch.long)
    types = torch.zeros((n_rows, width), dtype=torch.long)  # PaliGemma: 1 on targets
    spans: list[tuple[int, int]] = []  # (row, start) of each example
    examples: list[Encoded] = []
    real = 0
    for r, row in enumerate(rows):
        start = 0
        for e in row:
            body, n = len(e.input_ids), e.length
            end = start + n
            ids[r, start : start + body] = torch.tensor(e.input_ids)
            ids[r, start + body : end] = torch.tensor(e.dummy, dtype=torch.long)
            labels[r, start : start + body] = torch.tensor(e.labels)
            labels[r, start] = IGNORE_INDEX  # as unpacked: no token predicts a row's first
            positions[:, r, start:end] = torch.arange(n) + (1 if prefix_lm else 0)
            if mrope and e.images and not e.has_dummy:
                assert rope_index is not None  # an mrope layout always has one
                body_ids = torch.tensor([e.input_ids])
                index3, _ = rope_index(
                    body_ids,
                    mm_token_type_ids=(body_ids == image_token_id).to(torch.int),
                    image_grid_thw=e.images["image_grid_thw"],
                )
                positions[1:, r, start : start + body] = index3[:, 0]
            index[r, start:end] = len(examples)
            if prefix_lm:
                types[r, start + e.prompt_length : start + body] = 1
            spans.append((r, start))
            examples.append(e)
            real += body
            start = end
    masks = {}
    if not varlen:
        block = image_block_token, prefix_lm, sliding_window
        masks["attention_mask"] = _attention_mask(spans, examples, index, *block)
    if image_block_token is not None:
        batch_types = {"token_type_ids": (ids == image_block_token).to(torch.long)}
    elif prefix_lm:
        batch_types = {"token_type_ids": types}
    else:
        batch_types = {}
    batch: dict[str, Any] = {
        "input_ids": ids,
        **masks,
        **batch_types,
        "labels": labels,
        "position_ids": positions if mrope else positions[0],
        "example_index": index,
        "real_tokens": real,
    }
    batch.update(join_images(layout_kind, [e.images for e in examples], ids, image_token_id))
    if mrope:
        batch["mm_token_type_ids"] = (ids == image_token_id).to(torch.int)
    batch["task_names"] = [e.task for e in examples]
    batch["example_ids"] = [e.id for e in examples]
    return batch


def _one_dummy(row: Sequence[Encoded], has_image: bool) -> list[Encoded]:
    """The row's examples with the dummy images dropped but the first (all of them when the row
    has an image). A dummy's tokens are attended by no real token, so dropping one changes
    nothing that is trained; it only saves its tokens."""
    may_keep = not has_image
    out = []
    for e in row:
        if e.has_dummy and not may_keep:
            e = replace(e, images={}, dummy=[], has_dummy=False)
        may_keep = may_keep and not e.has_dummy
        out.append(e)
    return out


def _attention_mask(
    spans: Sequence[tuple[int, int]],
    examples: Sequence[Encoded],
    index: torch.Tensor,
    image_block_token: int | None,
    prefix_lm: bool,
    sliding_window: int | None,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The packed rows' block-diagonal additive mask (pack_batch's docstring says which);
    `index` [rows, width]: each position's example, -1 on padding."""
    n_rows, width = index.shape
    allowed = torch.zeros((n_rows, width, width), dtype=torch.bool)
    for (r, start), e in zip(spans, examples, strict=True):
        body, n = len(e.input_ids), e.length
        end = start + n
        # as unpacked: causal over the example's real tokens (attention_mask 1 there);
        # its dummy tokens are keys of no query but themselves
        causal = torch.ones((n, n), dtype=torch.bool).tril()
        if image_block_token is not None:  # Gemma 3: each image's run both ways
            causal |= _same_image_run(e.input_ids + e.dummy, image_block_token)
        if prefix_lm:  # PaliGemma: the prompt both ways (the target sees it all anyway)
            causal[: e.prompt_length, : e.prompt_length] = True
        causal[:, body:] = False
        allowed[r, start:end, start:end] = causal
        allowed[r, range(start + body, end), range(start + body, end)] = True
    pad_rows, pad_cols = (index < 0).nonzero(as_tuple=True)
    allowed[pad_rows, pad_cols, pad_cols] = True  # padding: itself, so no softmax row is empty
    mask: torch.Tensor | dict[str, torch.Tensor] = _additive(allowed)
    if image_block_token is not None or (prefix_lm and sliding_window is not None):
        mask = {"full_attention": mask}
        if sliding_window is not None:
            i = torch.arange(width)
            near = (i[:, None] - i[None, :]) < sliding_window
            # padding keeps its own position (q - k = 0), so no softmax row is empty
            mask["sliding_attention"] = _additive(allowed & near)
    return mask


def _additive(allowed: torch.Tensor) -> torch.Tensor:
    """[rows, 1, q, k] float32: 0 where allowed, the dtype's minimum elsewhere."""
    mask = torch.zeros((allowed.shape[0], 1, *allowed.shape[1:]), dtype=torch.float32)
    return mask.masked_fill_(~allowed[:, None], torch.finfo(torch.float32).min)


def _same_image_run(ids: Sequence[int], token: int) -> torch.Tensor:
    """[n, n] bool: both positions in the same contiguous run of `token` (one image)."""
    is_image = torch.tensor(ids) == token
    starts = is_image & ~torch.nn.functional.pad(is_image, (1, 0))[:-1]
    run = torch.where(is_image, torch.cumsum(starts.long(), 0), 0)
    return (run[:, None] == run[None, :]) & is_image[:, None]


def packed_target_counts(labels: torch.Tensor, index: torch.Tensor, shift: bool) -> torch.Tensor:
    """Target tokens per example of a packed batch, as the loss counts them."""
    if shift:  # each example's first label is a prompt token (-100): no pair crosses examples
        labels, index = labels[:, 1:], index[:, 1:]
    n = int(index.max()) + 1
    target = (labels != IGNORE_INDEX) & (index >= 0)
    return torch.bincount(index[target], minlength=n)


def packed_example_losses(
    logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, shift: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of token losses, number of target tokens) per example of a packed batch: the
    same sums as generalist.batching.losses.example_losses gives the examples unpacked."""
    index = index.to(labels.device)
    n = int(index.max()) + 1
    if shift:
        logits, labels, index = logits[:, :-1], labels[:, 1:], index[:, 1:]
    token = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    target = (labels.reshape(-1) != IGNORE_INDEX) & (index.reshape(-1) >= 0)
    which = index.reshape(-1)[target]
    sums = torch.zeros(n, dtype=token.dtype, device=token.device).index_add(0, which, token[target])
    counts = torch.bincount(which, minlength=n)
    return sums, counts
