"""`som serve MODEL --engine vllm`: vLLM's OpenAI server, prompted like somflow's profile.

Why: vLLM batches many requests on a GPU, the transformers engine answers one at a time. For
the answers to stay comparable with `som eval run`, vLLM must render the prompt as the
model's somflow prompt profile does: LLaVA-1.5 models get `LLAVA15_TEMPLATE` (LLaVA's
vicuna_v1 conversation, som.serve.prompting's multi-turn rendering), chat-template models
keep their own template. One difference remains: vLLM's LLaVA processor does not pad images
to a square as the llava-1.5 profile does (LLaVA's ``image_aspect_ratio pad``), so non-square
images may be answered slightly differently; use the transformers engine where answers must
equal evaluation's exactly.

vLLM is an optional extra (``pip install 'somflow[serve-vllm]'``), not a dependency.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from som.serve.errors import EngineError
from som.serve.launch import ServeOptions
from som.train.templates import VICUNA_SYSTEM

log = logging.getLogger(__name__)

EXTRA = "serve-vllm"

LLAVA15_TEMPLATE = (
    "{%- set system = '" + VICUNA_SYSTEM.replace("'", "\\'") + "' -%}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "  {%- if messages[0]['content'] is string -%}{%- set system = messages[0]['content'] -%}\n"
    "  {%- else -%}{%- set system = messages[0]['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('\\n') -%}{%- endif -%}\n"
    "  {%- set messages = messages[1:] -%}\n"
    "{%- endif -%}\n"
    "{{- bos_token + system + ' ' -}}\n"
    "{%- for message in messages -%}\n"
    "  {%- if message['content'] is string -%}{%- set text = message['content'] -%}{%- set images = 0 -%}\n"
    "  {%- else -%}\n"
    "    {%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text')"
    " | join('\\n') -%}\n"
    "    {%- set images = message['content'] | rejectattr('type', 'equalto', 'text') | list | length -%}\n"
    "  {%- endif -%}\n"
    "  {%- if message['role'] == 'user' -%}\n"
    "    {{- 'USER: ' + '<image>\\n' * images + text + ' ' -}}\n"
    "  {%- elif message['role'] == 'assistant' -%}\n"
    "    {{- 'ASSISTANT: ' + text + '</s>' -}}\n"
    "  {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}\n"
)
"""LLaVA-1.5's prompt as a chat template: the BOS, the vicuna_v1 system message (or the
request's), ``USER: <image>\\n{text} ASSISTANT: {answer}</s>`` per round, ``ASSISTANT:`` to
answer. Content parts come as vLLM's "openai" content format (``--chat-template-content-format
openai``): text parts joined by newlines, one ``<image>\\n`` per image part before them."""


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def chat_template(profile: str) -> str | None:
    """The template vLLM must use for a somflow profile (None: the model's own)."""
    if profile == "llava-1.5":
        return LLAVA15_TEMPLATE
    if profile == "chat-template":
        return None
    raise EngineError(
        f"--engine vllm serves llava-1.5 and chat-template models; the {profile!r} profile "
        "is served with --engine transformers"
    )


def vllm_command(
    model: str,
    *,
    host: str,
    port: int,
    served_name: str,
    template_file: Path | None,
    dtype: str = "auto",
    max_images: int = 4,
    max_concurrency: int | None = None,
    load_in_4bit: bool = False,
) -> list[str]:
    """The command line of vLLM's OpenAI server for these options (the API key goes through
    $VLLM_API_KEY, never the command line, where `ps` would show it)."""
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--host",
        host,
        "--port",
        str(port),
        "--served-model-name",
        served_name,
        "--dtype",
        dtype,
        "--chat-template-content-format",
        "openai",
        "--limit-mm-per-prompt",
        json.dumps({"image": max_images}),
    ]
    if template_file is not None:
        command += ["--chat-template", str(template_file)]
    if max_concurrency is not None:
        command += ["--max-num-seqs", str(max_concurrency)]
    if load_in_4bit:
        command += ["--quantization", "bitsandbytes"]  # vLLM quantizes 4-bit in flight, 8-bit it cannot
    return command


def write_template(profile: str, folder: Path) -> Path | None:
    """Write the profile's template to `folder` for --chat-template (None: the model's own)."""
    template = chat_template(profile)
    if template is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{profile}.jinja"
    path.write_text(template)
    return path


def model_profile(model: str, prompt_profile: str | None, local_files_only: bool) -> str:
    """The somflow profile name of `model` (config and processor only, no weights)."""
    from transformers import AutoConfig, AutoProcessor

    from som.eval.profiles import resolve_profile

    config = AutoConfig.from_pretrained(model, local_files_only=local_files_only)
    processor = AutoProcessor.from_pretrained(model, local_files_only=local_files_only)
    return resolve_profile(prompt_profile, config, processor).name


def run_vllm(options: ServeOptions, *, api_key: str | None, template_folder: Path) -> int:
    """Run vLLM's server in the foreground for `options`; returns its exit status.
    EngineError names the extra to install when vLLM is missing, and what it cannot do."""
    if not vllm_available():
        raise EngineError(
            f"--engine vllm needs vLLM, which is not installed here: pip install "
            f"'somflow[{EXTRA}]' (a CUDA machine), or use --engine transformers"
        )
    if options.load_in_8bit:
        raise EngineError(
            "vLLM quantizes 4-bit in flight only: use --load-in-4bit, or --engine transformers for --load-in-8bit"
        )
    if options.tags != "none":
        raise EngineError("--tags auto marks images in somflow's server: use --engine transformers with it")
    profile = model_profile(options.model, options.prompt_profile, options.local_files_only)
    template = write_template(profile, template_folder)
    command = vllm_command(
        options.model,
        host=options.host or "127.0.0.1",
        port=options.port,
        served_name=options.name,
        template_file=template,
        dtype=options.dtype,
        max_images=options.max_images,
        max_concurrency=options.max_concurrency,
        load_in_4bit=options.load_in_4bit,
    )
    env = dict(os.environ)
    if api_key:
        env["VLLM_API_KEY"] = api_key
    if options.local_files_only:
        env["HF_HUB_OFFLINE"] = "1"
    log.warning("starting vLLM (%s profile): %s", profile, " ".join(command))
    return subprocess.call(command, env=env)
