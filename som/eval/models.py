"""The models an evaluation asks: local transformers image-text-to-text models and any
OpenAI-compatible chat endpoint, behind one small protocol.

Why one protocol: benchmarks, sharding and resuming (flows/evaluate.py) only need "answer
these questions, in order"; where the answers come from is a detail of the model spec
(`load_model`). Decoding is greedy (HF) / temperature 0 (API) so a rerun gives the same
answers and scores are comparable with the published ones.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Protocol, cast, runtime_checkable

from som.chat_api import ChatClient, ChatRequest, image_content, text_content
from som.eval.profiles import AUTO, Prompt, PromptProfile, Question, processor_inputs, resolve_profile

__all__ = [
    "API_PREFIX",
    "HF_PREFIX",
    "SERVED_PREFIX",
    "APIModel",
    "HFModel",
    "Question",
    "VisionLanguageModel",
    "is_api_spec",
    "load_model",
]

log = logging.getLogger(__name__)

API_PREFIX = "openai:"
HF_PREFIX = "hf:"
SERVED_PREFIX = "served:"
"""``served:RUN_DIR``: the `som serve` whose RUN_DIR/endpoint.json says where it listens."""
SERVER_SIDE_KWARGS = frozenset({"batch_size", "device", "dtype", "local_files_only"})
"""Local-model settings a served model ignores: its server chose them when it loaded the model."""
DEFAULT_MAX_NEW_TOKENS = 128
"""LLaVA's model_vqa_loader.py default; the runner passes each benchmark's own."""
NOT_MODEL_INPUTS = frozenset({"labels"})
"""Processor outputs generate() must not get (PaliGemma's processor adds training labels)."""


@runtime_checkable
class VisionLanguageModel(Protocol):
    def answer(self, requests: list[Question]) -> list[str]:
        """One answer per question, in the questions' order."""
        ...


# ----------------------------------------------------------------------------- transformers


class HFModel:
    """A transformers image-text-to-text model (hub id or local folder, e.g. somflow's exports).

    A question becomes the model's input through a prompt profile (som.eval.profiles, shared
    with serving): "auto" picks LLaVA-1.5's own format for LLaVA-1.5 models and the chat
    template for the other families. Batches are generated with left padding so every row's
    new tokens start at the same position and the batched answers equal the one-by-one answers."""

    def __init__(
        self,
        model_id: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        local_files_only: bool = False,
        prompt_profile: str | None = AUTO,
        quantization_config: Any = None,
    ) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = model_id
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        if dtype == "auto":
            from som.devices import auto_dtype  # native bf16 only: V100/T4 get fp16, as LLaVA evaluates

            self.dtype = auto_dtype(self.device, without_bf16=torch.float16)
        else:
            self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.processor = AutoProcessor.from_pretrained(model_id, local_files_only=local_files_only)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:  # some LLaMA tokenizers ship without one
            self.tokenizer.pad_token = self.tokenizer.eos_token
        config = AutoConfig.from_pretrained(model_id, local_files_only=local_files_only)
        self.profile: PromptProfile = resolve_profile(prompt_profile, config, self.processor)  # before the weights
        if quantization_config is None:
            model = AutoModelForImageTextToText.from_pretrained(
                model_id, dtype=self.dtype, local_files_only=local_files_only
            )
            # transformers wraps PreTrainedModel.to in functools.wraps, whose stub does not bind self;
            # Module.to moves the model in place and returns it
            cast("torch.nn.Module", model).to(self.device)
            self.model = model.eval()
        else:  # bitsandbytes places the weights itself (serving's --load-in-4bit/8bit)
            self.model = AutoModelForImageTextToText.from_pretrained(
                model_id,
                dtype=self.dtype,
                local_files_only=local_files_only,
                quantization_config=quantization_config,
                device_map={"": self.device},
            ).eval()
        log.info("loaded %s on %s (%s), prompt profile %s", model_id, self.device, self.dtype, self.profile.name)

    def prompt(self, question: Question) -> Prompt:
        """The model's input for `question`: the profile's text and image(s)."""
        return self.profile.render_question(self.processor, question)

    def prompt_text(self, question: Question) -> str:
        """The model's input text for `question`, as the processor receives it."""
        return self.prompt(question).text

    def answer(self, requests: list[Question]) -> list[str]:
        answers: list[str] = [""] * len(requests)
        prompts = [self.prompt(q) for q in requests]  # a question the profile refuses fails before any generation
        # Image and text-only questions go in separate batches: processors want all or none.
        for with_image in (True, False):
            index = [i for i, q in enumerate(requests) if (q.image is not None) == with_image]
            for start in range(0, len(index), self.batch_size):
                chunk = index[start : start + self.batch_size]
                for i, text in zip(chunk, self.decode(self.generate([prompts[i] for i in chunk])), strict=True):
                    answers[i] = text
        return answers

    def generate(
        self,
        batch: Sequence[Prompt],
        *,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        **generate_kwargs: Any,
    ) -> Any:
        """The new token ids (batch x new tokens, pad after a row's end) for rendered prompts.

        Greedy at temperature 0 (evaluation), sampled otherwise. Serving (som.serve.engine)
        renders its requests with the same profile and generates through here, so served and
        evaluated answers come from one code path; `generate_kwargs` (a streamer, stopping
        criteria) go to transformers' generate."""
        import torch

        encoded = processor_inputs(self.processor, self.profile, batch)
        inputs = {k: self._to_device(v) for k, v in encoded.items() if k not in NOT_MODEL_INPUTS}
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        )
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                **sampling,
                max_new_tokens=max_new_tokens or self.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **generate_kwargs,
            )
        return output[:, inputs["input_ids"].shape[1] :]

    def decode(self, new_tokens: Any) -> list[str]:
        """Answers from `generate`'s token ids: special tokens dropped, whitespace stripped."""
        return [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def _to_device(self, value: Any) -> Any:
        """Tensors (and Fuyu's lists of image patches) on the model's device, floats in its dtype."""
        import torch

        if isinstance(value, torch.Tensor):
            return value.to(self.device, self.dtype) if torch.is_floating_point(value) else value.to(self.device)
        if isinstance(value, list):
            return [self._to_device(v) for v in value]
        return value


# ----------------------------------------------------------------------------- API


class APIModel:
    """Any OpenAI-compatible chat endpoint through som.chat_api (concurrency limit, retries on
    429/5xx, response cache), one chat completion per question at temperature 0.

    API models receive the raw question, no prompt profile: the endpoint applies its model's
    own chat format."""

    def __init__(
        self,
        base_url: str | None,
        model: str | None,
        api_key: str | None = None,
        *,
        max_concurrency: int = 4,
        cache_url: str | None = None,
        max_tokens: int = 128,
        **client_kwargs: Any,
    ) -> None:
        self.client = ChatClient(
            base_url, model, api_key, max_concurrency=max_concurrency, cache_url=cache_url, **client_kwargs
        )
        self.name = self.client.model
        self.max_tokens = max_tokens

    def request(self, question: Question) -> ChatRequest:
        content: list[dict[str, Any]] = [] if question.image is None else [image_content(question.image)]
        content.append(text_content(question.prompt))
        return ChatRequest([{"role": "user", "content": content}], temperature=0.0, max_tokens=self.max_tokens)

    def answer(self, requests: list[Question]) -> list[str]:
        return [a.strip() for a in self.client.complete_many([self.request(q) for q in requests])]

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"APIModel({self.client!r}, max_tokens={self.max_tokens})"


# ----------------------------------------------------------------------------- specs


def is_api_spec(spec: str) -> bool:
    """True for models answered over HTTP (``openai:``, ``served:``): no local weights, no
    batch size, and the prompt format is the endpoint's."""
    return spec.startswith((API_PREFIX, SERVED_PREFIX))


def load_model(spec: str, *, prompt_profile: str | None = None, **kwargs: Any) -> VisionLanguageModel:
    """A model from its spec.

    ``openai:<model>@<base_url>`` (or ``openai:<model>`` / ``openai:`` with the rest from
    $SOMFLOW_CHAT_BASE_URL / $SOMFLOW_CHAT_MODEL) gives an `APIModel`; anything else (a hub
    id, a local folder, optionally prefixed ``hf:``) an `HFModel` prompted by `prompt_profile`
    (None or "auto": chosen from the model, see som.eval.profiles). `kwargs` go to the class;
    ``max_new_tokens`` becomes an API model's ``max_tokens``, so one setting serves both.

    ``served:<run_dir>`` is an `APIModel` on the `som serve` endpoint of that run folder (its
    endpoint.json; the key from $SOMFLOW_API_KEY). That server renders the raw question with
    the same prompt profile as `HFModel`, so its answers equal the in-process ones."""
    if spec.startswith(SERVED_PREFIX):
        from som.serve.endpoint import API_KEY_ENV, read_endpoint

        if prompt_profile not in (None, AUTO):
            raise ValueError(
                f"prompt profile {prompt_profile!r} given for {spec!r}: the server applies its own "
                "(som serve --prompt-profile)"
            )
        endpoint = read_endpoint(spec[len(SERVED_PREFIX) :])
        if endpoint.get("tags", "none") != "none":
            raise ValueError(
                f"{spec} marks every image (som serve --tags {endpoint['tags']}); evaluation marks "
                "the images of its tags variant itself, so evaluate a server started with --tags none"
            )
        kwargs = {k: v for k, v in kwargs.items() if k not in SERVER_SIDE_KWARGS}
        if "max_new_tokens" in kwargs:
            kwargs.setdefault("max_tokens", kwargs.pop("max_new_tokens"))
        kwargs.setdefault("api_key", os.environ.get(API_KEY_ENV))
        return APIModel(endpoint["url"], endpoint["model"], **kwargs)
    if spec.startswith(API_PREFIX):
        if prompt_profile not in (None, AUTO):
            raise ValueError(
                f"prompt profile {prompt_profile!r} given for {spec!r}: API models receive the raw question"
            )
        if "max_new_tokens" in kwargs:
            kwargs.setdefault("max_tokens", kwargs.pop("max_new_tokens"))
        rest = spec[len(API_PREFIX) :]
        model, _, base_url = rest.partition("@")
        return APIModel(base_url or None, model or None, **kwargs)  # None: ChatClient reads env
    return HFModel(spec.removeprefix(HF_PREFIX), prompt_profile=prompt_profile, **kwargs)
