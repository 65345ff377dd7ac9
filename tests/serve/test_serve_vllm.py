"""`som serve --engine vllm`: the exact command line, the llava-1.5 chat template rendering
what somflow's profile renders (checked with jinja2 and with transformers' own template
renderer, which vLLM uses), and a clear error where vLLM is not installed."""

from __future__ import annotations

import sys
from pathlib import Path

import jinja2
import pytest
from click.testing import CliRunner
from jinja2.sandbox import ImmutableSandboxedEnvironment

from som.cli import cli
from som.eval.profiles import PROFILES
from som.serve.engine import LocalEngine, local_engine
from som.serve.errors import EngineError
from som.serve.vllm import LLAVA15_TEMPLATE, chat_template, vllm_available, vllm_command, write_template
from tests.helpers.tiny_llava import build_tiny_llava

BOS = "<s>"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="module")
def engine(folder: str) -> LocalEngine:
    return local_engine(folder, local_files_only=True)


def as_vllm(messages: list[dict]) -> list[dict]:
    """OpenAI messages as vLLM hands them to the template with --chat-template-content-format
    openai: image parts become {"type": "image"}, text parts stay."""
    converted = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [{"type": "image"} if p["type"] == "image_url" else p for p in content]
        converted.append({**message, "content": content})
    return converted


def render(messages: list[dict]) -> str:
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(LLAVA15_TEMPLATE).render(
        messages=messages, bos_token=BOS, add_generation_prompt=True
    )


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}
CONVERSATIONS = {
    "question with image": [{"role": "user", "content": [IMAGE, {"type": "text", "text": "What is it?"}]}],
    "text only (string)": [{"role": "user", "content": "Say hello."}],
    "text only (parts)": [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}],
    "multi-turn": [
        {"role": "user", "content": [IMAGE, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "A man ironing."},
        {"role": "user", "content": "Where?"},
    ],
    "system message": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": "Why?"}, IMAGE]},
    ],
}


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_llava_template_renders_the_profile_prompt(name: str, engine: LocalEngine, folder: str) -> None:
    """vLLM with this template sees BOS + the text somflow's server renders (and for one
    question, the text `som eval` renders); transformers' renderer (what vLLM calls) agrees."""
    from transformers import AutoProcessor

    from tests.helpers.data import data_path

    photo = data_path("extreme_ironing.jpg").read_bytes()
    messages = CONVERSATIONS[name]
    with_image = [
        {
            **m,
            "content": [
                {**p, "image_url": {"url": _data_url(photo)}} if p["type"] == "image_url" else p for p in m["content"]
            ]
            if isinstance(m["content"], list)
            else m["content"],
        }
        for m in messages
    ]
    expected = BOS + engine.prompt(with_image).text
    assert render(as_vllm(messages)) == expected
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    rendered = processor.apply_chat_template(
        as_vllm(messages), chat_template=LLAVA15_TEMPLATE, add_generation_prompt=True, tokenize=False
    )
    assert rendered == expected


def _data_url(data: bytes) -> str:
    from som.chat_api import image_content

    return image_content(data)["image_url"]["url"]


def test_single_question_is_eval_prompt(engine: LocalEngine) -> None:
    question = PROFILES["llava-1.5"].render(engine.model.processor, "What is it?", None).text
    assert render([{"role": "user", "content": "What is it?"}]) == BOS + question


def test_templates_per_profile(tmp_path: Path) -> None:
    assert chat_template("llava-1.5") == LLAVA15_TEMPLATE
    assert chat_template("chat-template") is None  # the model's own
    with pytest.raises(EngineError, match="--engine transformers"):
        chat_template("paligemma")
    path = write_template("llava-1.5", tmp_path)
    assert path is not None and path.read_text() == LLAVA15_TEMPLATE
    assert write_template("chat-template", tmp_path) is None


def test_vllm_command_line(tmp_path: Path) -> None:
    template = tmp_path / "llava-1.5.jinja"
    command = vllm_command(
        "runs/r1/export",
        host="127.0.0.1",
        port=8000,
        served_name="r1",
        template_file=template,
        dtype="float16",
        max_images=2,
        max_concurrency=8,
        load_in_4bit=True,
    )
    assert command == [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "runs/r1/export",
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--served-model-name",
        "r1",
        "--dtype",
        "float16",
        "--chat-template-content-format",
        "openai",
        "--limit-mm-per-prompt",
        '{"image": 2}',
        "--chat-template",
        str(template),
        "--max-num-seqs",
        "8",
        "--quantization",
        "bitsandbytes",
    ]
    plain = vllm_command(
        "llava-hf/llava-v1.6-mistral-7b-hf", host="127.0.0.1", port=9000, served_name="m", template_file=None
    )
    assert "--chat-template" not in plain and "--quantization" not in plain
    assert "--api-key" not in plain  # the key goes through $VLLM_API_KEY


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed here")
def test_without_vllm_the_error_names_the_extra(folder: str) -> None:
    result = CliRunner().invoke(cli, ["serve", folder, "--engine", "vllm", "--local-files-only"])
    assert result.exit_code == 1
    assert "somflow[serve-vllm]" in result.output and "Traceback" not in result.output
