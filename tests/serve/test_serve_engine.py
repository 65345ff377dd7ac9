"""The serving engine: the prompt it renders for a request is the evaluation's prompt (text
and pixels), conversations follow each profile's training format, and streaming equals the
complete answer. A tiny random LLaVA (tests/helpers/tiny_llava.py) on CPU, no mocks."""

from __future__ import annotations

import numpy as np
import pytest

from som.chat_api import image_content, text_content
from som.eval.models import APIModel, HFModel, Question
from som.serve.engine import GenerationStats, LocalEngine, local_engine, quantization_config
from som.serve.errors import EngineError, RequestError
from som.train.templates import VICUNA_SYSTEM, render
from tests.helpers.data import data_path
from tests.helpers.tiny_llava import build_tiny_llava


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="module")
def engine(folder: str) -> LocalEngine:
    return local_engine(folder, local_files_only=True)


@pytest.fixture(scope="module")
def photo() -> bytes:
    return data_path("waterview.jpg").read_bytes()  # 1000x667: the llava-1.5 square padding matters


def api_messages(question: Question) -> list[dict]:
    """The request `som eval` sends for `question` through APIModel (`served:` and `openai:`)."""
    request = APIModel("http://127.0.0.1:9/v1", "m").request(question)
    return list(request.messages)


def assert_same_prompt(engine: LocalEngine, hf: HFModel, question: Question) -> None:
    served = engine.prompt(api_messages(question))
    evaluated = hf.prompt(question)
    assert served.text == evaluated.text
    assert len(served.images) == len(evaluated.images)
    for mine, theirs in zip(served.images, evaluated.images, strict=True):
        assert mine.size == theirs.size and np.array_equal(np.asarray(mine), np.asarray(theirs))


@pytest.mark.parametrize("profile", ["auto", "chat-template"])
def test_served_prompt_equals_eval_prompt(folder: str, photo: bytes, profile: str) -> None:
    """APIModel's request (image part, then text part) renders on the server to exactly the
    text and pixels HFModel renders for the same question, image or text only."""
    served = local_engine(folder, local_files_only=True, prompt_profile=profile)
    hf = HFModel(folder, batch_size=1, local_files_only=True, prompt_profile=profile)
    assert served.model.profile.name == hf.profile.name == ("llava-1.5" if profile == "auto" else profile)
    for question in (Question(photo, "What is on the water?", "img"), Question(None, "Say hello.", "txt")):
        assert_same_prompt(served, hf, question)


def test_served_answers_equal_eval_answers(engine: LocalEngine, photo: bytes) -> None:
    hf = engine.model
    for question in (Question(photo, "What is on the water?", "img"), Question(None, "Say hello.", "txt")):
        expected = hf.answer([question])[0]
        assert engine.complete(api_messages(question), max_tokens=hf.max_new_tokens) == expected


def test_stream_joins_to_the_complete_answer(engine: LocalEngine, photo: bytes) -> None:
    messages = api_messages(Question(photo, "Describe the scene.", "s"))
    stats, streamed_stats = GenerationStats(), GenerationStats()
    answer = engine.complete(messages, max_tokens=24, stats=stats)
    pieces = list(engine.stream(messages, max_tokens=24, stats=streamed_stats))
    assert len(pieces) > 1 and "".join(pieces) == answer
    assert stats == streamed_stats and stats.prompt_tokens > 24
    assert stats.completion_tokens <= 24 and stats.finish_reason in ("stop", "length")


def test_closing_a_stream_frees_the_model(engine: LocalEngine) -> None:
    messages = [{"role": "user", "content": "Describe the scene."}]
    pieces = engine.stream(messages, max_tokens=60)
    next(pieces)
    pieces.close()
    assert engine.complete(messages, max_tokens=3) == engine.complete(messages, max_tokens=3)


def test_llava_conversation_is_vicuna_v1(engine: LocalEngine, photo: bytes) -> None:
    """Multi-turn: LLaVA's conv_vicuna_v1 as training renders it (som.train.templates), cut
    before the answer to give; the image as in the single-question prompt."""
    messages = [
        {"role": "user", "content": [image_content(photo), text_content("What is this?")]},
        {"role": "assistant", "content": "A lake."},
        {"role": "user", "content": [text_content("Any boats?")]},
    ]
    prompt = engine.prompt(messages)
    trained, _ = render(
        [
            {"from": "human", "value": "<image>\nWhat is this?"},
            {"from": "gpt", "value": "A lake."},
            {"from": "human", "value": "Any boats?"},
            {"from": "gpt", "value": "Yes."},
        ],
        "vicuna_v1",
    )
    assert prompt.text == trained.removesuffix(" Yes.</s>")
    single = engine.prompt(messages[:1])
    assert len(prompt.images) == 1 and np.array_equal(np.asarray(prompt.images[0]), np.asarray(single.images[0]))
    assert prompt.images[0].size == (1000, 1000)  # padded to a square, as evaluated

    with_system = engine.prompt([{"role": "system", "content": "Be brief."}, *messages])
    assert (
        with_system.text.startswith("Be brief. USER: <image>\nWhat is this?") and VICUNA_SYSTEM not in with_system.text
    )


def test_chat_template_conversation(folder: str, photo: bytes) -> None:
    templated = local_engine(folder, local_files_only=True, prompt_profile="chat-template")
    messages = [
        {"role": "user", "content": [text_content("What is this?"), image_content(photo)]},
        {"role": "assistant", "content": "A lake."},
        {"role": "user", "content": "Any boats?"},
    ]
    prompt = templated.prompt(messages)
    assert prompt.text == "USER: <image>\nWhat is this? ASSISTANT: A lake.</s>USER: Any boats? ASSISTANT:"
    assert len(prompt.images) == 1 and prompt.images[0].size == (1000, 667)


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([], "non-empty list"),
        ([{"role": "assistant", "content": "Hi"}], "last message must be the user's"),
        ([{"role": "wizard", "content": "Hi"}], "role must be one of"),
        ([{"role": "user", "content": [{"type": "audio", "audio": "x"}]}], "expected a text part"),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, {"role": "user", "content": "c"}],
            "system message may only come first",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}],
            "unsupported image URL",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}],
            "not valid base64",
        ),
    ],
)
def test_bad_messages_are_request_errors(engine: LocalEngine, messages: list, reason: str) -> None:
    with pytest.raises(RequestError, match=reason) as caught:
        engine.complete(messages, max_tokens=2)
    assert caught.value.status == 400


def test_corrupt_image_names_the_reason(engine: LocalEngine) -> None:
    truncated = data_path("som_logo.png").read_bytes()  # a real PNG cut at 256 KiB
    with pytest.raises(RequestError, match="truncated") as caught:
        engine.complete([{"role": "user", "content": [image_content(truncated, "image/png")]}], max_tokens=2)
    assert caught.value.code == "invalid_image"


def test_quantization_needs_cuda_and_says_so() -> None:
    import torch

    assert quantization_config(False, False, "auto") is None
    with pytest.raises(EngineError, match="one of"):
        quantization_config(True, True, "auto")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="needs a CUDA GPU"):
            quantization_config(True, False, "auto")
    with pytest.raises(EngineError, match="CUDA"):
        quantization_config(False, True, "cpu")
