"""The evaluation's model adapters: a tiny random Llava loaded from a local folder through the
real from_pretrained path, and the API adapter against a local chat-completions server."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from som.eval.model_check import ModelSpecError, check_model_spec
from som.eval.models import APIModel, HFModel, Question, VisionLanguageModel, load_model
from som.eval.profiles import ProfileError
from som.train.templates import VICUNA_SYSTEM
from tests.helpers.chat_server import ChatServer, Reply
from tests.helpers.data import data_path
from tests.helpers.tiny_llava import build_tiny_llava


@pytest.fixture(scope="module")
def image() -> bytes:
    return data_path("extreme_ironing.jpg").read_bytes()


@pytest.fixture(scope="module")
def questions(image: bytes) -> list[Question]:
    return [
        Question(image, "What is the man doing?", "q1"),
        Question(image, "How many cars are there in the image? Answer with a single number.", "q2"),
        Question(image, "Describe.", "q3"),
    ]


@pytest.fixture(scope="module")
def llava_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="module")
def hf_model(llava_folder: str) -> HFModel:
    return HFModel(llava_folder, batch_size=8, max_new_tokens=6, local_files_only=True)


# ----------------------------------------------------------------------------- HFModel


def test_hf_model_answers_a_batch(hf_model: HFModel, questions: list[Question]) -> None:
    assert isinstance(hf_model, VisionLanguageModel)
    assert hf_model.model.device.type == "cpu" and str(hf_model.dtype) == "torch.float32"
    assert hf_model.tokenizer.padding_side == "left"
    answers = hf_model.answer(questions)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    assert answers == [a.strip() for a in answers] and any(answers)


def test_batched_answers_equal_one_by_one(hf_model: HFModel, questions: list[Question]) -> None:
    """Prompts of different lengths in one batch: left padding must not change any answer."""
    lengths = {len(hf_model.tokenizer(hf_model.prompt_text(q))["input_ids"]) for q in questions}
    assert len(lengths) > 1
    batched = hf_model.answer(questions)
    assert batched == [hf_model.answer([q])[0] for q in questions]


def test_greedy_is_deterministic_and_batch_size_free(
    llava_folder: str, hf_model: HFModel, questions: list[Question]
) -> None:
    first = hf_model.answer(questions)
    assert hf_model.answer(questions) == first
    small_batches = HFModel(llava_folder, batch_size=2, max_new_tokens=6, local_files_only=True)
    assert small_batches.answer(questions) == first


def test_text_only_questions_keep_their_place(hf_model: HFModel, questions: list[Question]) -> None:
    mixed = [questions[0], Question(None, "Say hello.", "t1"), questions[1]]
    answers = hf_model.answer(mixed)
    assert answers[0] == hf_model.answer([questions[0]])[0]
    assert answers[1] == hf_model.answer([mixed[1]])[0]
    assert answers[2] == hf_model.answer([questions[1]])[0]


def test_llava_models_get_llava15_prompt_unless_overridden(hf_model: HFModel, llava_folder: str, image: bytes) -> None:
    """A LLaVA-1.5 model is asked as LLaVA's model_vqa_loader asks it, not by its chat template."""
    question = Question(image, "What is it?", "p")
    assert hf_model.profile.name == "llava-1.5"
    assert hf_model.prompt_text(question) == f"{VICUNA_SYSTEM} USER: <image>\nWhat is it? ASSISTANT:"
    assert hf_model.prompt_text(Question(None, "Hi", "t")) == f"{VICUNA_SYSTEM} USER: Hi ASSISTANT:"
    templated = load_model(llava_folder, prompt_profile="chat-template", max_new_tokens=2, local_files_only=True)
    assert templated.prompt_text(question) == "USER: <image>\nWhat is it? ASSISTANT:"


@pytest.mark.gpu
def test_hf_model_bf16_on_cuda(llava_folder: str, questions: list[Question]) -> None:
    import torch

    model = HFModel(llava_folder, max_new_tokens=6, local_files_only=True)
    assert model.model.device.type == "cuda" and model.model.dtype == torch.bfloat16
    answers = model.answer(questions)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)


# ----------------------------------------------------------------------------- APIModel


def test_api_request_body(chat_server: ChatServer, image: bytes) -> None:
    chat_server.script = [Reply(content="  ironing  ")]
    model = APIModel(chat_server.url, "gpt-test", "sk-secret", max_tokens=32)
    assert model.answer([Question(image, "What is the man doing?", "q1")]) == ["ironing"]
    [recorded] = chat_server.requests
    body = recorded.body
    assert body["model"] == "gpt-test" and body["temperature"] == 0 and body["max_tokens"] == 32
    [message] = body["messages"]
    assert message["role"] == "user"
    image_part, text_part = message["content"]
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == image
    assert text_part == {"type": "text", "text": "What is the man doing?"}
    assert recorded.headers["Authorization"] == "Bearer sk-secret"
    assert "sk-secret" not in repr(model)


def test_api_order_preserved_under_concurrency(chat_server: ChatServer, image: bytes) -> None:
    """Earlier questions answer slower, so replies arrive out of order."""

    def reply(body: dict[str, Any], index: int) -> Reply:
        prompt = body["messages"][0]["content"][-1]["text"]
        n = int(prompt.split()[-1])
        return Reply(content=f"answer {n}", delay=0.02 * (8 - n))

    chat_server.script = reply
    model = APIModel(chat_server.url, "gpt-test", max_concurrency=4)
    questions = [Question(image if n % 2 else None, f"question {n}", str(n)) for n in range(8)]
    assert model.answer(questions) == [f"answer {n}" for n in range(8)]
    assert 1 < chat_server.max_in_flight <= 4
    for recorded in chat_server.requests:  # a text-only question sends no image part
        content = recorded.body["messages"][0]["content"]
        n = int(content[-1]["text"].split()[-1])
        assert [p["type"] for p in content] == (["image_url", "text"] if n % 2 else ["text"])


def test_api_cache_hit_makes_no_requests(chat_server: ChatServer, image: bytes, tmp_path: Path) -> None:
    chat_server.script = lambda body, index: Reply(content=f"a{index}")
    questions = [Question(image, f"q {n}", str(n)) for n in range(3)]
    cache = str(tmp_path / "cache")
    first = APIModel(chat_server.url, "gpt-test", cache_url=cache).answer(questions)
    assert len(chat_server.requests) == 3
    again = APIModel(chat_server.url, "gpt-test", cache_url=cache)
    assert again.answer(questions) == first
    assert len(chat_server.requests) == 3 and again.client.stats.cache_hits == 3


def test_api_retries_on_429(chat_server: ChatServer, image: bytes) -> None:
    chat_server.script = [Reply(status=429, content=None, headers={"Retry-After": "0"}), Reply(content="ok")]
    model = APIModel(chat_server.url, "gpt-test", max_concurrency=1)
    assert model.answer([Question(image, "q", "1")]) == ["ok"]
    assert len(chat_server.requests) == 2


# ----------------------------------------------------------------------------- load_model


def test_load_model_dispatch(llava_folder: str, monkeypatch: pytest.MonkeyPatch) -> None:
    api = load_model("openai:gpt-4o@http://127.0.0.1:9/v1", max_concurrency=2)
    assert isinstance(api, APIModel)
    assert api.name == "gpt-4o" and api.client.base_url == "http://127.0.0.1:9/v1"
    assert api.client.max_concurrency == 2

    monkeypatch.setenv("SOMFLOW_CHAT_BASE_URL", "http://127.0.0.1:10/v1")
    monkeypatch.setenv("SOMFLOW_CHAT_MODEL", "env-model")
    from_env = load_model("openai:")
    assert isinstance(from_env, APIModel)
    assert from_env.name == "env-model" and from_env.client.base_url == "http://127.0.0.1:10/v1"
    assert load_model("openai:other").name == "other"

    for spec in (llava_folder, f"hf:{llava_folder}"):
        hf = load_model(spec, max_new_tokens=2, local_files_only=True)
        assert isinstance(hf, HFModel) and hf.name == llava_folder


def test_load_model_generation_settings(llava_folder: str) -> None:
    api = load_model("openai:gpt-4o@http://127.0.0.1:9/v1", max_new_tokens=1024)
    assert isinstance(api, APIModel) and api.max_tokens == 1024
    with pytest.raises(ValueError, match="API models receive the raw question"):
        load_model("openai:gpt-4o@http://127.0.0.1:9/v1", prompt_profile="llava-1.5")
    hf = load_model(llava_folder, max_new_tokens=3, prompt_profile="auto", local_files_only=True)
    assert isinstance(hf, HFModel) and hf.max_new_tokens == 3 and hf.profile.name == "llava-1.5"


# ----------------------------------------------------------------------------- model check


def test_model_check_accepts_a_folder_and_api_specs(llava_folder: str) -> None:
    check_model_spec(llava_folder, local_files_only=True)
    check_model_spec(f"hf:{llava_folder}", prompt_profile="chat-template")
    check_model_spec("openai:gpt-4o@http://127.0.0.1:9/v1")


def test_model_check_names_what_is_missing(llava_folder: str, tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match=r"model folder '.*runs/som-13b/hf' does not exist"):
        check_model_spec(str(tmp_path / "runs" / "som-13b" / "hf"))
    with pytest.raises(ModelSpecError, match="does not exist"):
        check_model_spec("runs/som-13b/hf")
    weights_only = tmp_path / "weights-only"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        (weights_only / name).write_bytes((Path(llava_folder) / name).read_bytes())
    with pytest.raises(
        ModelSpecError,
        match="is missing processor_config.json or preprocessor_config.json; tokenizer.json or tokenizer.model",
    ):
        check_model_spec(str(weights_only))
    with pytest.raises(ModelSpecError, match="is a file"):
        check_model_spec(str(weights_only / "config.json"))
    with pytest.raises(ProfileError, match="unknown prompt profile 'vicuna'"):
        check_model_spec(llava_folder, prompt_profile="vicuna")
    with pytest.raises(ProfileError, match="'paligemma' is for paligemma models"):
        check_model_spec(llava_folder, prompt_profile="paligemma")
    with pytest.raises(ProfileError, match="API models receive the raw question"):
        check_model_spec("openai:gpt-4o", prompt_profile="chat-template")


def test_model_check_offline_hub_id_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = str(tmp_path / "hub")
    with pytest.raises(
        ModelSpecError,
        match="not in the local Hugging Face cache and --local-files-only .*hf download llava-hf/llava-1.5-7b-hf",
    ):
        check_model_spec("llava-hf/llava-1.5-7b-hf", local_files_only=True, cache_dir=cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSpecError, match="HF_HUB_OFFLINE=1 forbids"):
        check_model_spec("llava-hf/llava-1.5-7b-hf", cache_dir=cache)
    # a cached snapshot passes (huggingface_hub's cache layout: refs/main -> snapshots/<commit>/)
    repo = tmp_path / "hub" / "models--llava-hf--llava-1.5-7b-hf"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    check_model_spec("llava-hf/llava-1.5-7b-hf", cache_dir=cache)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    check_model_spec("someone/not-cached-but-online", cache_dir=cache)
