"""A served conversation as the model's input, through the evaluation's prompt profiles.

Why here and not in the server: `som serve`, `som chat` and `som demo` must show a model
what `som eval run` shows it. A request that is one user question (text, at most one image,
no system message; what `served:` evaluation and APIModel send) is rendered by the profile's
own `render` after the image is decoded by the profile's `decode_image`: the same calls
`HFModel.prompt` makes, so the text and pixels are identical by construction.

Longer conversations extend each profile the way its model was trained:
- ``llava-1.5``: LLaVA's ``conv_vicuna_v1`` (SeparatorStyle.TWO, llava/conversation.py):
  ``"{system} USER: {q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT:"``, each image as
  ``<image>\\n`` before its turn's text and padded to a square like the single-question case.
  A system message replaces LLaVA's default one.
- ``chat-template``: the processor's chat template over the whole conversation (images
  first in their turn, as the profile does for one question).
- ``paligemma`` and ``fuyu`` answer single questions only: longer requests are a 400.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from som.eval.profiles import Llava15Profile, ProfileError, Prompt, PromptProfile, decode_image
from som.serve.errors import RequestError
from som.serve.messages import Turn
from som.train.templates import IMAGE_TOKEN, get_template


def render_conversation(profile: PromptProfile, processor: Any, turns: Sequence[Turn]) -> Prompt:
    """The processor row for `turns` (checked by som.serve.messages.parse_messages)."""
    try:
        if len(turns) == 1 and len(turns[0].images) <= 1:
            turn = turns[0]
            image = decode_image(turn.images[0]) if turn.images else None
            return profile.render(processor, turn.text, image)
        if isinstance(profile, Llava15Profile):
            return _llava15(profile, processor, turns)
        if profile.name == "chat-template":
            return _chat_template(processor, turns)
    except ProfileError as exc:
        raise RequestError(str(exc), code="unsupported_input") from None
    raise RequestError(
        f"prompt profile {profile.name!r} answers one question (one user message with at most "
        "one image); send a single user message",
        code="unsupported_input",
    )


def _llava15(profile: Llava15Profile, processor: Any, turns: Sequence[Turn]) -> Prompt:
    template = get_template("vicuna_v1")
    user, assistant = template.roles
    system = turns[0].text if turns[0].role == "system" else template.system
    token = getattr(processor, "image_token", None) or IMAGE_TOKEN  # as the profile's single question
    parts = [system + template.sep]
    images = []
    for turn in turns:
        if turn.role == "user":
            question = "".join(f"{token}\n" for _ in turn.images) + turn.text
            parts.append(f"{user}: {question}{template.sep}")
            images += [profile.square_image(processor, decode_image(data)) for data in turn.images]
        elif turn.role == "assistant":
            parts.append(f"{assistant}: {turn.text}{template.sep2}")
    parts.append(f"{assistant}:")
    return Prompt("".join(parts), tuple(images))


def _chat_template(processor: Any, turns: Sequence[Turn]) -> Prompt:
    conversation = []
    images = []
    for turn in turns:
        content: list[dict[str, str]] = [{"type": "image"} for _ in turn.images]
        content.append({"type": "text", "text": turn.text})
        conversation.append({"role": turn.role, "content": content})
        images += [decode_image(data) for data in turn.images]
    rendered = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    return Prompt(rendered, tuple(images))
