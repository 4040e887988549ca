"""Left truncation of a prompt so that the whole target fits in max_length (the collator's)."""

from __future__ import annotations

from generalist.errors import DataError


def truncate_left(
    prompt: list[int],
    n_target: int,
    max_length: int,
    keep: set[int | None],
    protected: set[int | None],
    where: str,
) -> list[int]:
    """The prompt cut from the left (after its leading `keep` tokens: bos, images first) so that
    prompt + target fit in max_length; DataError naming `where` when the target cannot fit or
    the cut would reach a `protected` (image) token."""
    cut = len(prompt) + n_target - max_length
    if cut <= 0:
        return prompt
    head = 0  # leading bos / image tokens (BLIP-2, PaliGemma: images first) are never cut
    while head < len(prompt) and prompt[head] in keep:
        head += 1
    if cut > len(prompt) - head - 1:
        raise DataError(
            f"{where}: {len(prompt) + n_target} tokens exceed max_length {max_length} "
            f"and cutting the prompt cannot make the target ({n_target} tokens) fit; "
            "raise max_length"
        )
    if protected & set(prompt[head : head + cut]) - {None}:
        raise DataError(
            f"{where}: {len(prompt) + n_target} tokens exceed max_length "
            f"{max_length} and cutting the prompt would cut an image; raise max_length"
        )
    return prompt[:head] + prompt[head + cut :]
