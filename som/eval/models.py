"""The models an evaluation asks: local transformers image-text-to-text models and any
OpenAI-compatible chat endpoint, behind one small protocol.

Why one protocol: benchmarks, sharding and resuming (flows/evaluate.py) only need "answer
these questions, in order"; where the answers come from is a detail of the model spec
(`load_model`). Decoding is greedy (HF) / temperature 0 (API) so a rerun gives the same
answers and scores are comparable with the published ones.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from som.chat_api import ChatClient, ChatRequest, image_content, text_content

log = logging.getLogger(__name__)

API_PREFIX = "openai:"
HF_PREFIX = "hf:"
LLAVA_PROMPT = "USER: <image>\n{prompt} ASSISTANT:"
LLAVA_TEXT_PROMPT = "USER: {prompt} ASSISTANT:"


@dataclass(frozen=True)
class Question:
    """One question: `image` is encoded JPEG/PNG bytes (None for a text-only question)."""

    image: bytes | None
    prompt: str
    id: str


@runtime_checkable
class VisionLanguageModel(Protocol):
    def answer(self, requests: list[Question]) -> list[str]:
        """One answer per question, in the questions' order."""
        ...


# ----------------------------------------------------------------------------- transformers


def _decode_image(data: bytes) -> Any:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


class HFModel:
    """A transformers image-text-to-text model (hub id or local folder, e.g. somflow's exports).

    Batches are generated with left padding so every row's new tokens start at the same
    position and the batched answers equal the one-by-one answers."""

    def __init__(self, model_id: str, *, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 8, max_new_tokens: int = 128, local_files_only: bool = False) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = model_id
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        if dtype == "auto":
            self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        else:
            self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.processor = AutoProcessor.from_pretrained(model_id, local_files_only=local_files_only)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:  # some LLaMA tokenizers ship without one
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForImageTextToText.from_pretrained(
            model_id, dtype=self.dtype, local_files_only=local_files_only).to(self.device).eval()
        log.info("loaded %s on %s (%s)", model_id, self.device, self.dtype)

    def prompt_text(self, question: Question) -> str:
        """The model's input text: its processor's chat template, else LLaVA-1.5's format."""
        if getattr(self.processor, "chat_template", None):
            content: list[dict[str, str]] = [{"type": "image"}] if question.image is not None else []
            content.append({"type": "text", "text": question.prompt})
            return self.processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
        template = LLAVA_PROMPT if question.image is not None else LLAVA_TEXT_PROMPT
        return template.format(prompt=question.prompt)

    def answer(self, requests: list[Question]) -> list[str]:
        answers: list[str] = [""] * len(requests)
        # Image and text-only questions go in separate batches: processors want all or none.
        for with_image in (True, False):
            index = [i for i, q in enumerate(requests) if (q.image is not None) == with_image]
            for start in range(0, len(index), self.batch_size):
                chunk = index[start:start + self.batch_size]
                for i, text in zip(chunk, self._generate([requests[i] for i in chunk]), strict=True):
                    answers[i] = text
        return answers

    def _generate(self, batch: Sequence[Question]) -> list[str]:
        import torch

        texts = [self.prompt_text(q) for q in batch]
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
        if batch[0].image is not None:
            kwargs["images"] = [_decode_image(q.image) for q in batch if q.image is not None]
        inputs = self.processor(**kwargs)
        inputs = {k: (v.to(self.device, self.dtype) if torch.is_floating_point(v) else v.to(self.device))
                  for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        with torch.inference_mode():
            output = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens,
                                         pad_token_id=self.tokenizer.pad_token_id)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


# ----------------------------------------------------------------------------- API


class APIModel:
    """Any OpenAI-compatible chat endpoint through som.chat_api (concurrency limit, retries on
    429/5xx, response cache), one chat completion per question at temperature 0."""

    def __init__(self, base_url: str | None, model: str | None, api_key: str | None = None, *,
                 max_concurrency: int = 4, cache_url: str | None = None, max_tokens: int = 128,
                 **client_kwargs: Any) -> None:
        self.client = ChatClient(base_url, model, api_key, max_concurrency=max_concurrency,
                                 cache_url=cache_url, **client_kwargs)
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


def load_model(spec: str, **kwargs: Any) -> VisionLanguageModel:
    """A model from its spec.

    ``openai:<model>@<base_url>`` (or ``openai:<model>`` / ``openai:`` with the rest from
    $SOMFLOW_CHAT_BASE_URL / $SOMFLOW_CHAT_MODEL) gives an `APIModel`; anything else (a hub
    id, a local folder, optionally prefixed ``hf:``) an `HFModel`. `kwargs` go to the class."""
    if spec.startswith(API_PREFIX):
        rest = spec[len(API_PREFIX):]
        model, _, base_url = rest.partition("@")
        return APIModel(base_url or None, model or None, **kwargs)  # None: ChatClient reads env
    return HFModel(spec.removeprefix(HF_PREFIX), **kwargs)
