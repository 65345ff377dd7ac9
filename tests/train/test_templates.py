"""LLaVA-1.5's prompt text, byte for byte, and the supervised spans of every answer."""

from __future__ import annotations

import dataclasses

import pytest

from som.train.templates import TEMPLATES, VICUNA_SYSTEM, Template, get_template, render

# llava/conversation.py, conv_vicuna_v1 (conv_templates["v1"], LLaVA-1.5's --version v1)
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)


def turns(*values: str) -> list[dict]:
    return [{"from": "human" if k % 2 == 0 else "gpt", "value": v} for k, v in enumerate(values)]


def test_vicuna_v1_is_llavas_conversation() -> None:
    template = TEMPLATES["vicuna_v1"]
    assert (template.system, template.roles, template.sep, template.sep2) == (
        SYSTEM,
        ("USER", "ASSISTANT"),
        " ",
        "</s>",
    )
    assert VICUNA_SYSTEM == SYSTEM
    with pytest.raises(dataclasses.FrozenInstanceError):
        template.sep = "\n"  # type: ignore[misc]


def test_single_turn_text_only() -> None:
    text, spans = render(turns("Hi there?", "Hello."), "vicuna_v1")
    assert text == f"{SYSTEM} USER: Hi there? ASSISTANT: Hello.</s>"
    assert [text[a:b] for a, b in spans] == ["Hello.</s>"]


def test_multi_turn_with_image_moved_to_the_front() -> None:
    text, spans = render(
        turns("What is he doing?\n<image>", "Ironing.", "Where?", "On a taxi. "), TEMPLATES["vicuna_v1"]
    )
    assert text == (
        f"{SYSTEM} USER: <image>\nWhat is he doing? ASSISTANT: Ironing.</s>USER: Where? ASSISTANT: On a taxi. </s>"
    )
    assert [text[a:b] for a, b in spans] == ["Ironing.</s>", "On a taxi. </s>"]  # values verbatim


def test_two_turns_with_an_image_are_llavas_layout_string_for_string() -> None:
    """Conversation.get_prompt (SeparatorStyle.TWO) of conv_vicuna_v1 with the image moved to
    the front: "{system} USER: <image>\\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>"."""
    text, spans = render(turns("<image>\nQ1", "A1", "Q2", "A2"), "vicuna_v1")
    assert text == SYSTEM + " USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>"
    assert [text[a:b] for a, b in spans] == ["A1</s>", "A2</s>"]


def test_image_alone_in_the_question() -> None:
    text, _ = render(turns("<image>", "A cat."), "vicuna_v1")
    assert text == f"{SYSTEM} USER: <image> ASSISTANT: A cat.</s>"  # LLaVA strips the "\n" too


def test_plain_keeps_only_image_and_caption() -> None:
    text, spans = render(turns("<image>\nDescribe the image briefly.", "A busy street."), "plain")
    assert text == "<image>A busy street.\n"
    assert [text[a:b] for a, b in spans] == ["A busy street.\n"]


@pytest.mark.parametrize(
    ("conversation", "message"),
    [
        (turns(), "non-empty list"),
        ([{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}], "turn 0 must be from 'human'"),
        (turns("q", "a", "q2") + [{"from": "human", "value": "again"}], "turn 3 must be from 'gpt'"),
        (turns("q", "  "), "turn 1 (gpt) is empty"),
        (turns("q", "a", "q2"), "turn 2 is a question without an answer"),
        (turns("q", "a", "<image>\nq2", "a2"), "<image> in turn 2"),
        (turns("<image> and <image>", "a"), "appears 2 times in turn 0"),
        ([{"from": "human", "value": 3}, {"from": "gpt", "value": "a"}], "turn 0 (human) is empty"),
        (["q", "a"], "turn 0 must be from 'human', got 'str'"),
    ],
)
def test_malformed_turns_name_the_problem(conversation: list, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        render(conversation, "vicuna_v1")


@pytest.mark.parametrize(
    ("conversation", "message"),
    [
        (turns("<image>\nq", "a", "q2", "a2"), "one question and one caption, got 2 rounds"),
        (turns("no image here", "a"), "needs <image>"),
    ],
)
def test_plain_refuses_what_llava_asserts_against(conversation: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render(conversation, "plain")


def test_unknown_template_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown template 'llama_3'.*plain.*vicuna_v1"):
        get_template("llama_3")
    custom = Template(name="mine", system="Sys.", roles=("Q", "A"), sep="\n", sep2="<end>")
    text, spans = render(turns("x", "y"), custom)
    assert (text, [text[a:b] for a, b in spans]) == ("Sys.\nQ: x\nA: y<end>", ["y<end>"])


def test_exported_chat_template_renders_the_training_text() -> None:
    """A somflow export's chat template gives the vicuna_v1 text the model was trained on, so
    a chat-template client asks it exactly as training and evaluation do."""
    from jinja2 import Environment

    from som.train.export import VICUNA_CHAT_TEMPLATE

    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q1"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A1"}]},
        {"role": "user", "content": [{"type": "text", "text": "Q2"}]},
    ]
    rendered = Environment().from_string(VICUNA_CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=True)
    text, _ = render(turns("<image>\nQ1", "A1", "Q2", "A2"), "vicuna_v1")
    assert rendered == SYSTEM + " USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:"
    assert text.startswith(rendered)
