"""som.data.describer against a local chat-completions server."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from som.chat_api import ChatClient, ChatHTTPError
from som.data.describer import (
    SOURCE_DESCRIBER,
    Describer,
    DescriberConfig,
    DescriberPrompt,
    parse_answer,
)
from som.data.listing import listing_answer
from tests.helpers.chat_server import ChatServer, Reply

GOOD = "1. boat: small white motorboat near the pier\n2. water: calm grey-blue lake\n3. sky: pale overcast sky"


def describer_for(server: ChatServer, cache_url: str | None = None, **config: Any) -> Describer:
    client = ChatClient(server.url, "describer-model", "sk-x", cache_url=cache_url, backoff_base=0.01)
    return Describer(client, config=DescriberConfig(**config))


def test_happy_path(chat_server: ChatServer, marks, marked_image: bytes) -> None:
    chat_server.script = [Reply(GOOD)]
    describer = describer_for(chat_server)
    result = describer.describe(marks, marked_image)
    assert result.ok and result.attempts == 1
    assert [(t.tag, t.label, t.name, t.description, t.source) for t in result.tags] == [
        (1, "1", "boat", "small white motorboat near the pier", SOURCE_DESCRIBER),
        (2, "2", "water", "calm grey-blue lake", SOURCE_DESCRIBER),
        (3, "3", "sky", "pale overcast sky", SOURCE_DESCRIBER),
    ]
    (request,) = chat_server.requests
    body = request.body
    assert body["model"] == "describer-model" and body["temperature"] == 0
    system, user = body["messages"]
    assert system["role"] == "system"
    assert system["content"] == DescriberPrompt.load().system_message()
    assert "N. name: short description" in system["content"]
    image_part = next(p for p in user["content"] if p["type"] == "image_url")
    assert image_part["image_url"]["url"] == "data:image/jpeg;base64," + base64.b64encode(marked_image).decode()
    assert "3 tags: 1, 2, 3" in next(p["text"] for p in user["content"] if p["type"] == "text")
    # what the conversation builders make of it
    assert listing_answer(marks, result.tag_names()).splitlines()[0] == "1. boat: small white motorboat near the pier"


def test_malformed_then_fixed_after_feedback(chat_server: ChatServer, marks, marked_image: bytes) -> None:
    bad = "Here are the tags:\n1. boat: a boat\n3. sky: the sky"
    chat_server.script = [Reply(bad), Reply(GOOD)]
    result = describer_for(chat_server).describe(marks, marked_image)
    assert result.ok and result.attempts == 2 and result.answers == (bad, GOOD)
    retry = chat_server.requests[1].body["messages"]
    assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]
    assert retry[2]["content"] == bad
    feedback = retry[3]["content"]
    assert "tag 2 is missing" in feedback and "Here are the tags" in feedback
    assert [t.name for t in result.tags] == ["boat", "water", "sky"]


def test_always_malformed_gives_up_with_error(chat_server: ChatServer, marks, marked_image: bytes) -> None:
    chat_server.script = [Reply("2. water: lake\n1. boat: boat\n3. sky: sky")]
    result = describer_for(chat_server, max_attempts=3).describe(marks, marked_image)
    assert not result.ok and result.attempts == 3
    assert "after 3 attempts" in result.error and "ascending order" in result.error
    assert len(chat_server.requests) == 3
    assert [t.name for t in result.tags] == [None, None, None]
    assert len(chat_server.requests[2].body["messages"]) == 6  # two rounds of feedback


def test_rerun_is_served_from_cache(chat_server: ChatServer, marks, marked_image: bytes, tmp_path) -> None:
    cache = str(tmp_path / "chat-cache")
    chat_server.script = [Reply("1. boat\n2. water"), Reply(GOOD)]
    first = describer_for(chat_server, cache).describe(marks, marked_image)
    assert first.ok and len(chat_server.requests) == 2
    chat_server.script = [Reply("1. wrong: answer\n2. x\n3. y")]
    again = describer_for(chat_server, cache).describe(marks, marked_image)
    assert len(chat_server.requests) == 2  # zero new requests: both answers replayed
    assert again == first


def test_cache_in_memory_storage(chat_server: ChatServer, marks, marked_image: bytes, tmp_path) -> None:
    cache = f"memory://describer-cache/{tmp_path.name}"
    chat_server.script = [Reply(GOOD)]
    describer_for(chat_server, cache).describe(marks, marked_image)
    describer_for(chat_server, cache).describe(marks, marked_image)
    assert len(chat_server.requests) == 1


def test_cache_key_changes_with_prompt_model_and_image(
    chat_server: ChatServer, marks, marked_image: bytes, tmp_path
) -> None:
    cache = str(tmp_path / "cache")
    chat_server.script = [Reply(GOOD)]
    describer_for(chat_server, cache).describe(marks, marked_image)
    describer = describer_for(chat_server, cache)
    describer.prompt = DescriberPrompt(describer.prompt.system + "\nBe brief.", describer.prompt.examples)
    describer.describe(marks, marked_image)
    assert len(chat_server.requests) == 2  # edited prompt: a new request
    other = ChatClient(chat_server.url, "another-model", cache_url=cache)
    Describer(other).describe(marks, marked_image)
    assert len(chat_server.requests) == 3  # another model: a new request
    describer_for(chat_server, cache).describe({**marks, "sha256": "cd" * 32}, marked_image)
    assert len(chat_server.requests) == 4  # another image
    assert len({r.body["model"] for r in chat_server.requests}) == 2


def test_api_errors_raise(chat_server: ChatServer, marks, marked_image: bytes) -> None:
    chat_server.script = [Reply(status=401, body={"error": {"message": "invalid key"}})]
    with pytest.raises(ChatHTTPError, match="invalid key"):
        describer_for(chat_server).describe(marks, marked_image)


def test_describe_many_and_no_tags(chat_server: ChatServer, marks, marked_image: bytes) -> None:
    chat_server.script = [Reply(GOOD)]
    empty = {**marks, "marks": []}
    results = describer_for(chat_server).describe_many([(marks, marked_image), (empty, marked_image)])
    assert results[0].ok and results[1].ok and results[1].tags == ()
    assert len(chat_server.requests) == 1


def test_system_as_user(chat_server: ChatServer, marks, marked_image: bytes) -> None:
    chat_server.script = [Reply(GOOD)]
    describer_for(chat_server, system_as_user=True).describe(marks, marked_image)
    (message,) = chat_server.requests[0].body["messages"]
    assert message["role"] == "user" and "N. name: short description" in message["content"][0]["text"]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (GOOD, None),
        ("**1.** boat: a boat\n\n2) water\n3. Sky: sky.", None),
        ("1. boat\n2. water\n3. sky\n4. tree", "there is no tag 4"),
        ("1. boat\n2. water\n2. lake\n3. sky", "tag 2 is listed more than once"),
        ("1. boat\n2. : lake\n3. sky", "tag 2 has no name"),
        ("1. boat", "tags 2, 3 are missing"),
        ("3. sky\n1. boat\n2. water", "not in ascending order"),
        ("Sure! 1. boat, 2. water, 3. sky", "is not of the form"),
    ],
)
def test_parse_answer(answer: str, problem: str | None) -> None:
    parsed, problems = parse_answer(answer, ["1", "2", "3"])
    if problem is None:
        assert problems == [] and [p.name for p in parsed][0] == "boat"
    else:
        assert any(problem in p for p in problems), problems


def test_letter_labels() -> None:
    parsed, problems = parse_answer("A. cat: grey cat\nb. mat", ["a", "b"])
    assert problems == []
    assert [(p.label, p.name, p.description) for p in parsed] == [("a", "cat", "grey cat"), ("b", "mat", None)]


def test_prompt_files_are_configurable(tmp_path) -> None:
    system = tmp_path / "system.txt"
    system.write_text("Name the tags.")
    examples = tmp_path / "examples.json"
    examples.write_text(json.dumps([{"scene": "a cat", "tags": 1, "answer": "1. cat: a cat"}]))
    prompt = DescriberPrompt.load(system, examples)
    assert prompt.system_message().startswith("Name the tags.") and "1. cat: a cat" in prompt.system_message()
    assert prompt.hash("m") != DescriberPrompt.load().hash("m") != DescriberPrompt.load().hash("m2")
    examples.write_text(json.dumps([{"scene": "a cat", "tags": 2, "answer": "1. cat"}]))
    with pytest.raises(ValueError, match="breaks the answer format"):
        DescriberPrompt.load(system, examples)
