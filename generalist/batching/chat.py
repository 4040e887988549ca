"""The chat prompt format (`model.prompt_format: chat`): an Example rendered with the model's own
chat template (the processor's, else the tokenizer's), as instruct models were tuned.

    system     the task's instruction (or the first user turn's start when the template has no
               system role: detected by rendering one, never by family)
    user       an exemplar's question   | earlier turns, one pair per exemplar
    assistant  its answer               |
    user       the question, its "<image>" markers as {"type": "image"} items in place, so the
               template writes its own image tokens (the processor expands them)
    assistant  the target

The prompt is the conversation up to the question rendered with add_generation_prompt=True (what
generation feeds the model); the labelled completion is what the full rendering adds after it, up
to and including the template's end-of-turn token (Qwen's <|im_end|>, Gemma's <end_of_turn>);
a template that writes none (LLaVA-1.5's "ASSISTANT: ...") gets the tokenizer's eos, so the model
learns to stop. Generation stops at the end-of-turn token. A conversation too long for
max_length drops its exemplar turns, oldest first, before the collator cuts the prompt.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from generalist.catalog.records import ChatTurns, Example
from generalist.catalog.task import IMAGE_TOKEN
from generalist.errors import ConfigError, DataError
from generalist.model.bundle import ModelBundle

PROBE = "Zq"  # a sentinel text the probes look for in a rendering


def chat_template_of(bundle: ModelBundle) -> str | None:
    """The processor's chat template, else the tokenizer's (None when neither has one)."""
    processor, tokenizer = bundle.processor, bundle.tokenizer
    template = getattr(processor, "chat_template", None) if processor is not tokenizer else None
    return template or getattr(tokenizer, "chat_template", None)


class ChatFormat:
    """Renders Examples with a bundle's chat template (see the module docstring)."""

    def __init__(self, bundle: ModelBundle) -> None:
        template = chat_template_of(bundle)
        if not template:
            raise ConfigError(
                "config key 'model.prompt_format' is 'chat' but this model's processor and "
                "tokenizer have no chat template; use prompt_format: raw, or an instruct "
                "checkpoint (or add a chat_template.jinja to the model dir)"
            )
        self.template = template
        self.tokenizer = bundle.tokenizer
        self.list_content = bundle.family != "causal_lm"  # VLM templates take content items
        self.system_role = self._has_system_role()
        self.end_text = self._end_of_turn()
        end = self.end_text
        self.end_id = None if end is None else int(self.tokenizer.convert_tokens_to_ids(end))
        bos = self.tokenizer.bos_token
        # a template that writes bos itself: the processor must not add another (as transformers'
        # own apply_chat_template(tokenize=True) does)
        self.renders_bos = bool(bos) and self.render([self._user(PROBE)], True).startswith(bos)

    # -- rendering ------------------------------------------------------------------------
    def render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        """The template's text for `messages`."""
        return str(
            self.tokenizer.apply_chat_template(
                messages,
                chat_template=self.template,
                tokenize=False,
                add_generation_prompt=generation_prompt,
            )
        )

    def _content(self, text: str) -> str | list[dict[str, str]]:
        if not self.list_content:
            return text
        items: list[dict[str, str]] = []
        for n, piece in enumerate(text.split(IMAGE_TOKEN)):
            if n:
                items.append({"type": "image"})
            if piece:
                items.append({"type": "text", "text": piece})
        return items

    def _user(self, text: str) -> dict[str, Any]:
        return {"role": "user", "content": self._content(text)}

    def _assistant(self, text: str) -> dict[str, Any]:
        return {"role": "assistant", "content": self._content(text)}

    def messages(self, example: Example) -> list[dict[str, Any]]:
        """The conversation up to the question (the target not included)."""
        turns = example.turns or ChatTurns("", (), example.prompt)
        out: list[dict[str, Any]] = []
        question = turns.question
        first = turns.shots[0][0] if turns.shots else question
        if turns.instruction and self.system_role:
            out.append({"role": "system", "content": self._content(turns.instruction)})
        elif turns.instruction:
            first = f"{turns.instruction}\n{first}"
        shots = list(turns.shots)
        if shots:
            shots[0] = (first, shots[0][1])
        else:
            question = first
        for user, answer in shots:
            out += [self._user(user), self._assistant(answer)]
        return [*out, self._user(question)]

    def prompt_text(self, example: Example) -> str:
        """What generation feeds the model: the conversation and the assistant turn's opening."""
        return self.render(self.messages(example), True)

    def completion_text(self, example: Example, target: str) -> str:
        """The labelled text: what the full rendering adds after the prompt, through the
        end-of-turn token (or the target's end, when the template writes no such token)."""
        where = f"task {example.task!r} example {example.id!r}"
        messages = self.messages(example)
        prompt = self.render(messages, True)
        full = self.render([*messages, self._assistant(target)], False)
        if not full.startswith(prompt):
            raise DataError(
                f"{where}: the chat template renders the answered conversation differently from "
                "its generation prompt, so the target's place is unknown; use prompt_format: raw"
            )
        rest = full[len(prompt) :]
        content = target.strip()
        at = rest.find(content)
        if not content or at < 0:
            raise DataError(
                f"{where}: the chat template does not write the target {target!r} in the "
                "assistant turn (an empty target, or a template that drops it)"
            )
        head, after = rest[: at + len(content)], rest[at + len(content) :]
        if self.end_text is not None and after.lstrip().startswith(self.end_text):
            return head + after[: after.index(self.end_text) + len(self.end_text)]
        return head

    def target_ids(self, example: Example, target: str) -> list[int]:
        """Label token ids: the completion text, plus eos when the template ends no turn."""
        text = self.completion_text(example, target)
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return ids if self.end_text is not None else [*ids, self.tokenizer.eos_token_id]

    def drop_shot(self, example: Example) -> Example | None:
        """The example without its first exemplar turn pair (and that exemplar's images); None
        when it has none. A chat prompt too long for max_length loses exemplars before any cut."""
        turns = example.turns
        if turns is None or not turns.shots:
            return None
        n = turns.shots[0][0].count(IMAGE_TOKEN)
        shots = replace(turns, shots=turns.shots[1:])
        sources = example.image_sources[n:]
        return replace(example, turns=shots, images=example.images[n:], image_sources=sources)

    def stop_ids(self) -> list[int]:
        """Token ids generation stops at: the end-of-turn token and eos."""
        ids = [self.end_id, self.tokenizer.eos_token_id]
        return [i for i in dict.fromkeys(ids) if i is not None]

    # -- probes ---------------------------------------------------------------------------
    def _has_system_role(self) -> bool:
        """True when a system message's text reaches the rendering (it may be folded into the
        first user turn, as Gemma's template does); False when the template refuses or drops
        it: then the instruction opens the first user turn."""
        system = {"role": "system", "content": self._content("Sys" + PROBE)}
        try:
            text = self.render([system, self._user(PROBE)], True)
        except Exception:  # jinja's raise_exception: "System role not supported"
            return False
        return "Sys" + PROBE in text

    def _end_of_turn(self) -> str | None:
        """The special token the template writes right after an assistant turn, if any."""
        text = self.render([self._user(PROBE), self._assistant("Ans" + PROBE)], False)
        at = text.rfind("Ans" + PROBE)
        after = text[at + len("Ans" + PROBE) :].lstrip() if at >= 0 else ""
        specials = sorted(self._special_tokens(), key=len, reverse=True)
        return next((s for s in specials if after.startswith(s)), None)

    def _special_tokens(self) -> set[str]:
        tok = self.tokenizer
        out = {str(t) for t in getattr(tok, "all_special_tokens", [])}
        for added in getattr(tok, "added_tokens_decoder", {}).values():
            if getattr(added, "special", False):
                out.add(str(added.content))
        return {t for t in out if t}
