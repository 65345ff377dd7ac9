"""Engines: what answers a chat, behind one small protocol shared by `som serve`, `som chat`
and `som demo`.

- `local_engine`: a transformers model loaded in this process through the evaluation's
  `HFModel`, prompted with the same profile (som.serve.prompting) and generated through
  `HFModel.generate`, so an answer served here is the answer `som eval run` gets. One
  generation runs at a time per model (a lock: concurrent callers queue).
- `remote_engine`: any OpenAI-compatible endpoint (`som serve` elsewhere, vLLM, a hosted
  API), so the chat and the demo can front a server on a GPU node.

Messages are OpenAI chat messages (som.serve.messages); bad input raises
som.serve.errors.RequestError. Generation is greedy at temperature 0, sampled otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from som.serve.errors import EngineError, RequestError
from som.serve.messages import ImageFetcher, image_bytes, parse_messages
from som.serve.prompting import render_conversation

if TYPE_CHECKING:
    from som.eval.models import HFModel
    from som.eval.profiles import Prompt

__all__ = ["Engine", "EngineError", "GenerationStats", "LocalEngine", "RemoteEngine", "local_engine", "remote_engine"]

log = logging.getLogger(__name__)


@dataclass
class GenerationStats:
    """Filled in by an engine when passed as `stats`: token counts and why generation ended
    ("stop": the model finished; "length": `max_tokens` cut it)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


@runtime_checkable
class Engine(Protocol):
    name: str
    """The model name reported by /v1/models (and expected in requests)."""

    def stream(
        self, messages: list[dict], *, max_tokens: int, temperature: float = 0.0, stats: GenerationStats | None = None
    ) -> Iterator[str]:
        """The answer to the last user message, in pieces as they are generated."""
        ...

    def complete(
        self, messages: list[dict], *, max_tokens: int, temperature: float = 0.0, stats: GenerationStats | None = None
    ) -> str:
        """The whole answer (leading and trailing whitespace stripped)."""
        ...


# ----------------------------------------------------------------------------- local


class LocalEngine:
    """An `HFModel` answering chats. `fetch` turns an image URL into checked bytes."""

    def __init__(self, model: HFModel, *, fetch: ImageFetcher = image_bytes) -> None:
        self.model = model
        self.name = model.name
        self.fetch = fetch
        self._lock = threading.Lock()

    def prompt(self, messages: list[dict]) -> Prompt:
        """The model's input (text and images) for `messages`, as the profile renders it."""
        return render_conversation(self.model.profile, self.model.processor, parse_messages(messages, self.fetch))

    def complete(
        self, messages: list[dict], *, max_tokens: int, temperature: float = 0.0, stats: GenerationStats | None = None
    ) -> str:
        prompt = self.prompt(messages)
        watch = _Watch()
        with self._lock:
            new_tokens = self.model.generate(
                [prompt], max_new_tokens=max_tokens, temperature=temperature, stopping_criteria=[watch]
            )
        if stats is not None:
            self._fill(stats, watch, new_tokens[0], max_tokens)
        return self.model.decode(new_tokens)[0]

    def stream(
        self, messages: list[dict], *, max_tokens: int, temperature: float = 0.0, stats: GenerationStats | None = None
    ) -> Iterator[str]:
        """Pieces of the answer; joined they equal `complete`'s answer (leading whitespace is
        dropped, trailing whitespace held back until more text follows). A bad request raises
        here, before anything is generated; closing the iterator early stops the generation
        at its next token."""
        return self._stream(self.prompt(messages), max_tokens, temperature, stats)

    def _stream(
        self, prompt: Prompt, max_tokens: int, temperature: float, stats: GenerationStats | None
    ) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.model.tokenizer, skip_prompt=True, skip_special_tokens=True)
        watch = _Watch()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with self._lock:
                    if watch.cancelled.is_set():
                        return
                    new_tokens = self.model.generate(
                        [prompt],
                        max_new_tokens=max_tokens,
                        temperature=temperature,
                        streamer=streamer,
                        stopping_criteria=[watch],
                    )
                if stats is not None:
                    self._fill(stats, watch, new_tokens[0], max_tokens)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer below
                failure.append(exc)
            finally:
                streamer.end()

        worker = threading.Thread(target=run, name="som-serve-generate", daemon=True)
        worker.start()
        try:
            yield from _trimmed(streamer)
        finally:
            watch.cancelled.set()
        worker.join()
        if failure:
            raise failure[0]

    def _fill(self, stats: GenerationStats, watch: _Watch, new_tokens: Any, max_tokens: int) -> None:
        """Counts of a batch-of-one generation (no padding: it ends at EOS or `max_tokens`)."""
        eos = self.model.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        stats.prompt_tokens = watch.prompt_tokens
        stats.completion_tokens = len(new_tokens)
        cut = len(new_tokens) >= max_tokens and int(new_tokens[-1]) not in eos_ids
        stats.finish_reason = "length" if cut else "stop"


class _Watch:
    """A transformers stopping criterion that records the prompt's length and stops the
    generation once `cancelled` is set (a streaming client went away)."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.prompt_tokens = 0

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if not self.prompt_tokens:
            self.prompt_tokens = int(input_ids.shape[1])
        return torch.full((input_ids.shape[0],), self.cancelled.is_set(), dtype=torch.bool, device=input_ids.device)


def _trimmed(pieces: Iterator[str]) -> Iterator[str]:
    """`pieces` without leading whitespace, and with trailing whitespace only where more
    text follows it: the joined stream equals the stripped complete answer."""
    started = False
    held = ""
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            if not piece:
                continue
            started = True
        text = held + piece
        body = text.rstrip()
        held = text[len(body) :]
        if body:
            yield body


def quantization_config(load_in_4bit: bool, load_in_8bit: bool, device: str) -> Any:
    """A bitsandbytes config for --load-in-4bit/8bit, or None; EngineError (naming what to
    install or pass) without CUDA or without bitsandbytes."""
    if not (load_in_4bit or load_in_8bit):
        return None
    flag = "--load-in-4bit" if load_in_4bit else "--load-in-8bit"
    if load_in_4bit and load_in_8bit:
        raise EngineError("pass one of --load-in-4bit and --load-in-8bit, not both")
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise EngineError(
            f"{flag} quantizes with bitsandbytes, which needs a CUDA GPU and none is visible "
            "here; drop the flag to serve unquantized"
        )
    if device != "auto" and not device.startswith("cuda"):
        raise EngineError(f"{flag} needs a CUDA device, not --device {device}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise EngineError(f"{flag} needs bitsandbytes: pip install bitsandbytes (or drop the flag)")
    from transformers import BitsAndBytesConfig

    if load_in_4bit:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float16, bnb_4bit_quant_type="nf4")
    return BitsAndBytesConfig(load_in_8bit=True)


def local_engine(
    model: str,
    *,
    prompt_profile: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    local_files_only: bool = False,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    fetch: ImageFetcher = image_bytes,
) -> LocalEngine:
    """Load `model` (hub id or folder) for chatting, prompted as `som eval run` prompts it.

    Raises EngineError for a quantization this machine cannot do, and the model checks'
    errors (som.eval.model_check) for a spec that cannot load."""
    from som.eval.model_check import check_model_spec
    from som.eval.models import HFModel

    quantization = quantization_config(load_in_4bit, load_in_8bit, device)
    check_model_spec(model, local_files_only=local_files_only, prompt_profile=prompt_profile)
    loaded = HFModel(
        model,
        device=device,
        dtype=dtype,
        batch_size=1,
        local_files_only=local_files_only,
        prompt_profile=prompt_profile,
        quantization_config=quantization,
    )
    return LocalEngine(loaded, fetch=fetch)


# ----------------------------------------------------------------------------- remote


class RemoteEngine:
    """An OpenAI-compatible endpoint. `base_url` is its API root (``http://host:8000/v1``).
    The endpoint's 4xx answers raise RequestError with its message; 5xx and 429 raise
    som.chat_api.ChatHTTPError, an unreachable endpoint ChatConnectionError."""

    def __init__(
        self, base_url: str, model: str | None = None, api_key: str | None = None, *, timeout: float = 300.0
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=timeout, headers=headers)
        self.name = model or self._first_model()

    def __repr__(self) -> str:
        return f"RemoteEngine({self.base_url!r}, model={self.name!r})"

    def close(self) -> None:
        self._http.close()

    def _first_model(self) -> str:
        with _reaching(self.base_url):
            response = self._http.get(f"{self.base_url}/models")
        _raise_for_status(response)
        models = response.json().get("data") or []
        if not models:
            raise EngineError(f"{self.base_url}/models lists no model; pass the model name")
        return str(models[0]["id"])

    def _body(self, messages: list[dict], max_tokens: int, temperature: float, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.name,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def complete(
        self, messages: list[dict], *, max_tokens: int, temperature: float = 0.0, stats: GenerationStats | None = None
    ) -> str:
        with _reaching(self.base_url):
            response = self._http.post(
                f"{self.base_url}/chat/completions", json=self._body(messages, max_tokens, temperature, False)
            )
        _raise_for_status(response)
        body = response.json()
        choice = body["choices"][0]
        if stats is not None:
            _fill_usage(stats, body.get("usage"))
            stats.finish_reason = choice.get("finish_reason") or "stop"
        return (choice["message"].get("content") or "").strip()

    def stream(
        self, messages: list[dict], *, max_tokens: int, temperature: float = 0.0, stats: GenerationStats | None = None
    ) -> Iterator[str]:
        body = self._body(messages, max_tokens, temperature, True)
        with (
            _reaching(self.base_url),
            self._http.stream("POST", f"{self.base_url}/chat/completions", json=body) as response,
        ):
            if response.status_code >= 400:
                response.read()
                _raise_for_status(response)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:  # the server failed after the stream began
                    raise _error(500, chunk["error"], str(response.url))
                if stats is not None and chunk.get("usage"):
                    _fill_usage(stats, chunk["usage"])
                for choice in chunk.get("choices") or []:
                    if choice.get("finish_reason") and stats is not None:
                        stats.finish_reason = choice["finish_reason"]
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece


def _fill_usage(stats: GenerationStats, usage: Any) -> None:
    usage = usage or {}
    stats.prompt_tokens = int(usage.get("prompt_tokens", 0))
    stats.completion_tokens = int(usage.get("completion_tokens", 0))


@contextlib.contextmanager
def _reaching(base_url: str) -> Iterator[None]:
    """httpx's transport errors as som.chat_api.ChatConnectionError naming the endpoint."""
    import httpx

    from som.chat_api import ChatConnectionError

    try:
        yield
    except httpx.TransportError as exc:
        raise ChatConnectionError(f"cannot reach {base_url}: {type(exc).__name__}: {exc}") from None


def _raise_for_status(response: Any) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    raise _error(response.status_code, error or response.text[:500] or response.reason_phrase, str(response.url))


def _error(status: int, error: Any, url: str) -> Exception:
    """RequestError for a 4xx (not 429) with the endpoint's message and code, else ChatHTTPError."""
    from som.chat_api import ChatHTTPError

    message = str(error.get("message") or error) if isinstance(error, dict) else str(error)
    code = error.get("code") if isinstance(error, dict) else None
    if 400 <= status < 500 and status != 429:
        return RequestError(message, status=status, code=code or "invalid_request")
    return ChatHTTPError(status, message, url)


def remote_engine(base_url: str, model: str | None = None, api_key: str | None = None) -> RemoteEngine:
    """An engine answering through the OpenAI-compatible endpoint at `base_url` (its API
    root); `model` None: the first model it lists."""
    return RemoteEngine(base_url, model, api_key)
