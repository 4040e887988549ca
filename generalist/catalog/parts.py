"""What one record contributes to a prompt block (`PromptParts`), and the builders the task families
share: each reads the standard fields its adapters write."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PromptParts:
    """What one record contributes to a prompt block (context, question, options, target)."""

    question: str
    target: str
    context: str = ""
    options: tuple[str, ...] = ()


def vqa_parts(fields: Mapping[str, Any]) -> PromptParts:
    """VQA records: fields question, answer."""
    return PromptParts(question=str(fields["question"]), target=str(fields["answer"]))


def multiple_choice_parts(fields: Mapping[str, Any]) -> PromptParts:
    """Multiple-choice records: fields question, options (list), answer (option text), context."""
    return PromptParts(
        question=str(fields["question"]),
        target=str(fields["answer"]),
        options=tuple(str(o) for o in fields["options"]),
        context=str(fields.get("context") or ""),
    )


def classification_parts(
    question: str, labels: Sequence[str], context: Callable[[Mapping[str, Any]], str] | None = None
) -> Callable[[Mapping[str, Any]], PromptParts]:
    """Classification as multiple choice over every label (Med-PaLM M); field `label` answers."""

    def parts(fields: Mapping[str, Any]) -> PromptParts:
        return PromptParts(
            question=question,
            target=str(fields["label"]),
            options=tuple(labels),
            context=context(fields) if context else "",
        )

    return parts


def generation_parts(
    question: str, target_field: str, context: Callable[[Mapping[str, Any]], str] | None = None
) -> Callable[[Mapping[str, Any]], PromptParts]:
    """Free-text generation (reports, summaries): a fixed question, the target from a field."""

    def parts(fields: Mapping[str, Any]) -> PromptParts:
        return PromptParts(
            question=question,
            target=str(fields[target_field]),
            context=context(fields) if context else "",
        )

    return parts
