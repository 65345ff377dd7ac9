"""LLaVA-1.5's conversation templates, rendered to one prompt string plus the character spans
the model is trained to produce.

Why character spans rather than token counts: LLaVA tokenizes each round separately to find
where answers start, which is only right when the tokenizer never merges across a round
boundary. Byte-level BPE does (" ASSISTANT" is one token: a separator and a role), so we
render the whole conversation once, tokenize it once and mask by character offsets
(`som.train.data.tokenize_supervised`).

The text is LLaVA-1.5's, byte for byte:
- ``vicuna_v1`` (LLaVA's ``conv_vicuna_v1``, ``SeparatorStyle.TWO``):
  ``"{system} USER: {q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>"``; the supervised
  spans are each ``{answer}</s>``. The space before an answer is the one character either
  side may own: LLaVA's Llama tokenizer makes it part of the answer's first token ("▁He"),
  which is trained, as LLaVA's ``preprocess_v1`` trains it (its instruction length stops at
  "ASSISTANT:"); `som.train.data` lets edge whitespace go with the token that holds it. On
  image records the ``<image>`` placeholder is moved to the start of the first question,
  followed by a newline (``preprocess_multimodal``).
- ``plain`` (``conv_llava_plain``, stage-1 pretraining): ``"<image>" + caption + "\\n"``; the
  question's text is dropped, as LLaVA drops it, and caption + newline are supervised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

IMAGE_TOKEN = "<image>"
HUMAN, GPT = "human", "gpt"

Span = tuple[int, int]


@dataclass(frozen=True)
class Template:
    """A conversation format. `sep` follows a question, `sep2` ends an answer (and is trained);
    `style` picks the renderer ("two": LLaVA's SeparatorStyle.TWO, "plain": captions only)."""

    name: str
    system: str
    roles: tuple[str, str]
    sep: str
    sep2: str
    style: str = "two"


VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's "
    "questions."
)
"""LLaVA's ``conv_vicuna_v1`` system message (``--version v1`` in LLaVA-1.5's finetune script).
Not the "curious user ... human's questions" wording of ``conv_llava_v1`` / Vicuna v0."""

TEMPLATES: dict[str, Template] = {
    "vicuna_v1": Template(name="vicuna_v1", system=VICUNA_SYSTEM, roles=("USER", "ASSISTANT"), sep=" ", sep2="</s>"),
    "plain": Template(name="plain", system="", roles=("", ""), sep="", sep2="\n", style="plain"),
}


def get_template(template: Template | str) -> Template:
    """The template itself, or the one registered under that name."""
    if isinstance(template, Template):
        return template
    try:
        return TEMPLATES[template]
    except KeyError:
        raise ValueError(f"unknown template {template!r}; known: {sorted(TEMPLATES)}") from None


def render(conversations: Sequence[Mapping[str, Any]], template: Template | str) -> tuple[str, list[Span]]:
    """The full prompt text of LLaVA turns and the supervised character spans [start, end).

    Raises ValueError naming the problem when turns are not human/gpt alternating from a human
    question to an answer, a value is empty or not a string, or ``<image>`` is misplaced."""
    template = get_template(template)
    values = _checked_values(conversations)
    if template.style == "plain":
        return _render_plain(values, template)
    if template.style == "two":
        return _render_two(values, template)
    raise ValueError(f"template {template.name!r} has unknown style {template.style!r}")


def _checked_values(conversations: Sequence[Mapping[str, Any]]) -> list[str]:
    if not isinstance(conversations, Sequence) or isinstance(conversations, str) or not conversations:
        raise ValueError("conversations must be a non-empty list of turns")
    values = []
    for number, turn in enumerate(conversations):
        expected = HUMAN if number % 2 == 0 else GPT
        if not isinstance(turn, Mapping) or turn.get("from") != expected:
            got = turn.get("from") if isinstance(turn, Mapping) else type(turn).__name__
            raise ValueError(f"turn {number} must be from {expected!r}, got {got!r}")
        value = turn.get("value")
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"turn {number} ({expected}) is empty")
        values.append(value)
    if len(values) % 2:
        raise ValueError(f"turn {len(values) - 1} is a question without an answer")
    for number, value in enumerate(values):
        if IMAGE_TOKEN in value and number > 0:
            raise ValueError(f"{IMAGE_TOKEN} in turn {number}; only the first question may hold it")
    if values[0].count(IMAGE_TOKEN) > 1:
        raise ValueError(f"{IMAGE_TOKEN} appears {values[0].count(IMAGE_TOKEN)} times in turn 0")
    return values


def _render_two(values: list[str], template: Template) -> tuple[str, list[Span]]:
    first = values[0]
    if IMAGE_TOKEN in first:  # LLaVA's preprocess_multimodal
        first = (IMAGE_TOKEN + "\n" + first.replace(IMAGE_TOKEN, "").strip()).strip()
    user, assistant = template.roles
    parts = [template.system + template.sep]
    spans: list[Span] = []
    length = len(parts[0])
    for number in range(0, len(values), 2):
        question = first if number == 0 else values[number]
        prompt = f"{user}: {question}{template.sep}{assistant}:"
        answer = f" {values[number + 1]}{template.sep2}"
        spans.append((length + len(prompt) + 1, length + len(prompt) + len(answer)))  # no space
        parts += [prompt, answer]
        length += len(prompt) + len(answer)
    return "".join(parts), spans


def _render_plain(values: list[str], template: Template) -> tuple[str, list[Span]]:
    if len(values) != 2:
        raise ValueError(
            f"template {template.name!r} takes one question and one caption, got {len(values) // 2} rounds"
        )
    if IMAGE_TOKEN not in values[0]:
        raise ValueError(f"template {template.name!r} needs {IMAGE_TOKEN} in the question")
    caption = values[1] + template.sep2
    return IMAGE_TOKEN + caption, [(len(IMAGE_TOKEN), len(IMAGE_TOKEN) + len(caption))]
