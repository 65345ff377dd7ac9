"""A small client for OpenAI-compatible chat completions (GPT-4V-class services, vLLM, any
local server that speaks ``POST {base_url}/chat/completions``).

Used by the tag describer (som/data/describer.py), the GPT judges and the API model adapter
of the evaluation. Why our own client rather than the `openai` package: we need only one
endpoint, and the behaviour that matters here (retry policy, concurrency limit, a response
cache in object storage shared by every worker) must be the same for every server.

Behaviour:
- Settings come from the arguments, else the environment: ``SOMFLOW_CHAT_BASE_URL``,
  ``SOMFLOW_CHAT_MODEL``, ``OPENAI_API_KEY``. The key never appears in reprs or logs.
- 429, 5xx and connection errors/timeouts are retried up to `max_retries` times with
  exponential backoff and jitter; a ``Retry-After`` header (seconds or an HTTP date) replaces
  the computed delay, capped at `max_backoff` so a server cannot park a worker for an hour.
  Any other 4xx raises `ChatHTTPError` at once with the status and the server's message.
- At most `max_concurrency` requests of one client are in flight at a time, whichever
  threads send them (`complete_many` uses a thread pool of that size).
- With `cache_url` (any som.storage URL: a folder, ``s3://…``, ``memory://…``) every
  successful answer is stored under the sha256 of the request (model, messages, temperature,
  max_tokens, extra) or of the caller's own `cache_key`; a hit sends no HTTP request.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from som import storage

log = logging.getLogger(__name__)

ENV_BASE_URL = "SOMFLOW_CHAT_BASE_URL"
ENV_MODEL = "SOMFLOW_CHAT_MODEL"
ENV_API_KEY = "OPENAI_API_KEY"

DEFAULT_MAX_TOKENS = 1024
_RESERVED_BODY_KEYS = frozenset({"model", "messages", "stream"})
_HEX64 = re.compile(r"[0-9a-f]{64}")

Message = Mapping[str, Any]


# ----------------------------------------------------------------------------- errors


class ChatAPIError(RuntimeError):
    """Base of this module's errors."""


class ChatHTTPError(ChatAPIError):
    """The server answered with an error status (after retries, for retryable ones)."""

    def __init__(self, status: int, server_message: str, url: str, attempts: int = 1) -> None:
        self.status = status
        self.server_message = server_message
        self.url = url
        self.attempts = attempts
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"chat API {url} returned HTTP {status}{tries}: {server_message}")


class ChatConnectionError(ChatAPIError):
    """The server could not be reached (or timed out) on every attempt."""


class ChatResponseError(ChatAPIError):
    """A 200 answer without the chat-completions shape (no choices[0].message)."""


# ----------------------------------------------------------------------------- helpers


class _Secret:
    """Holds the API key; its repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value or None

    def get(self) -> str | None:
        return self._value

    def __bool__(self) -> bool:
        return self._value is not None

    def __repr__(self) -> str:
        return "'***'" if self._value else "None"

    __str__ = __repr__


def _sniff_image_mime(data: bytes) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    raise ValueError("cannot tell the image type from its bytes; pass mime='image/…'")


def image_content(data: bytes, mime: str | None = None, *, detail: str | None = None) -> dict[str, Any]:
    """An OpenAI ``image_url`` content part carrying the image inline as a base64 data URL
    (no public URL needed, and the request alone determines the answer, which the cache
    key relies on). `mime` is sniffed from the bytes when not given."""
    mime = mime or _sniff_image_mime(data)
    if not mime.startswith("image/"):
        raise ValueError(f"not an image MIME type: {mime!r}")
    url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    part: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
    if detail is not None:
        part["image_url"]["detail"] = detail
    return part


def text_content(text: str) -> dict[str, Any]:
    """An OpenAI ``text`` content part."""
    return {"type": "text", "text": text}


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: equal values give equal bytes (cache keys)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def request_key(
    model: str,
    messages: Sequence[Message],
    temperature: float,
    max_tokens: int | None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The cache key of a request: sha256 of its canonical JSON."""
    payload = {
        "model": model,
        "messages": list(messages),
        "temperature": temperature,
        "max_tokens": max_tokens,
        "extra": dict(extra or {}),
    }
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date); None if
    absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _server_message(response: httpx.Response, limit: int = 500) -> str:
    """The server's error text: OpenAI's {"error": {"message": …}} when present."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, Mapping):
            error = error.get("message") or json.dumps(error)
        if error:
            return str(error)[:limit]
    text = response.text.strip()
    return text[:limit] if text else response.reason_phrase or "(empty body)"


def _message_text(body: Any) -> str:
    """choices[0].message.content as text (a list of parts is joined)."""
    try:
        content = body["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ChatResponseError(f"no choices[0].message in the answer: {str(body)[:300]}") from exc
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return str(content)


# ----------------------------------------------------------------------------- cache


@dataclass(frozen=True)
class ResponseCache:
    """Answers stored as ``<url>/<key[:2]>/<key>.json`` in object storage, written atomically.

    A read error other than "not there" is logged and treated as a miss, and a write error
    is logged and ignored: the cache saves money, it must never fail a run."""

    url: str
    options: Mapping[str, Any] | None = None

    def _object(self, key: str) -> str:
        return storage.join(self.url, key[:2], f"{key}.json")

    def get(self, key: str) -> str | None:
        try:
            data = storage.read_bytes(self._object(key), self.options)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            log.warning("chat cache read %s failed (%s); treating as a miss", key, exc)
            return None
        try:
            return str(json.loads(data)["content"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("chat cache entry %s is unreadable (%s); treating as a miss", key, exc)
            return None

    def put(self, key: str, content: str, model: str) -> None:
        record = {"key": key, "model": model, "content": content, "created": time.time()}
        try:
            storage.write_bytes_atomic(self._object(key), canonical_json(record), self.options, durable=False)
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            log.warning("chat cache write %s failed: %s", key, exc)


# ----------------------------------------------------------------------------- client


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make; `cache_key` replaces the key computed from the request."""

    messages: Sequence[Message]
    temperature: float = 0.0
    max_tokens: int | None = DEFAULT_MAX_TOKENS
    extra: Mapping[str, Any] | None = None
    cache_key: str | None = None


@dataclass
class ChatStats:
    """Counters of one client (thread-safe updates through the client's lock)."""

    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


class ChatClient:
    """Synchronous, thread-safe client of one model behind one OpenAI-compatible server.

    `base_url` is the API root (``https://api.openai.com/v1``, ``http://host:8000/v1``); a URL
    that already ends in ``/chat/completions`` is used as is."""

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        max_concurrency: int = 4,
        max_retries: int = 6,
        timeout: float = 120.0,
        cache_url: str | None = None,
        cache_options: Mapping[str, Any] | None = None,
        backoff_base: float = 1.0,
        max_backoff: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        base_url = base_url or env.get(ENV_BASE_URL)
        model = model or env.get(ENV_MODEL)
        if not base_url:
            raise ValueError(f"no chat API base URL: pass base_url or set ${ENV_BASE_URL}")
        if not model:
            raise ValueError(f"no chat model: pass model or set ${ENV_MODEL}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._api_key = _Secret(api_key if api_key is not None else env.get(ENV_API_KEY))
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.max_backoff = max_backoff
        self.cache = ResponseCache(cache_url, cache_options) if cache_url else None
        self.stats = ChatStats()
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._http = httpx.Client(
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )

    @property
    def endpoint(self) -> str:
        if self.base_url.endswith("/chat/completions"):
            return self.base_url
        return f"{self.base_url}/chat/completions"

    def __repr__(self) -> str:
        cache = self.cache.url if self.cache else None
        return (
            f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key={self._api_key!r}, max_concurrency={self.max_concurrency}, "
            f"max_retries={self.max_retries}, cache_url={cache!r})"
        )

    __str__ = __repr__

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public API

    def complete(
        self,
        messages: Sequence[Message],
        *,
        temperature: float = 0.0,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        extra: Mapping[str, Any] | None = None,
        cache_key: str | None = None,
    ) -> str:
        """The assistant's text for `messages` (from the cache when there)."""
        return self.run(ChatRequest(messages, temperature, max_tokens, extra, cache_key))

    def run(self, request: ChatRequest) -> str:
        """`complete` for a `ChatRequest`."""
        extra = dict(request.extra or {})
        reserved = _RESERVED_BODY_KEYS & extra.keys()
        if reserved:
            raise ValueError(f"extra must not set {sorted(reserved)}")
        key = self.cache_key_for(request)
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                self.stats.add("cache_hits")
                log.debug("chat cache hit %s", key)
                return cached
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(request.messages),
            "temperature": request.temperature,
        }
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        body.update(extra)
        content = _message_text(self._post(body))
        if self.cache is not None:
            self.cache.put(key, content, self.model)
        return content

    def complete_many(
        self, requests: Sequence[ChatRequest | Mapping[str, Any]], *, return_exceptions: bool = False
    ) -> list[Any]:
        """Answers in request order, at most `max_concurrency` in flight. Items are
        `ChatRequest`s or mappings of its fields. With `return_exceptions` a failed request
        gives its exception in its place; otherwise the first failure (in order) is raised."""
        items = [r if isinstance(r, ChatRequest) else ChatRequest(**r) for r in requests]
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(items)), thread_name_prefix="chat") as pool:
            futures = [pool.submit(self.run, item) for item in items]
            results: list[Any] = []
            for future in futures:
                exc = future.exception()
                if exc is not None and not return_exceptions:
                    for other in futures:
                        other.cancel()
                    raise exc
                results.append(exc if exc is not None else future.result())
        return results

    def cache_key_for(self, request: ChatRequest) -> str:
        """The storage key of a request: its own sha256, or the caller's key (hashed unless
        it already is a lowercase hex sha256, so any string is a safe object name).
        The model is always part of the key."""
        if request.cache_key is None:
            return request_key(self.model, request.messages, request.temperature, request.max_tokens, request.extra)
        if _HEX64.fullmatch(request.cache_key):
            return request.cache_key
        return hashlib.sha256(canonical_json({"model": self.model, "key": request.cache_key})).hexdigest()

    # ------------------------------------------------------------------ transport

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = self._api_key.get()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After when the server gives one, else full-jitter exponential; both capped."""
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        ceiling = min(self.max_backoff, self.backoff_base * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)

    def _post(self, body: Mapping[str, Any]) -> Any:
        url = self.endpoint
        payload = canonical_json(body)
        last = ""
        status: int | None = None
        message = ""
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                with self._slots:
                    self.stats.add("requests")
                    response = self._http.post(url, content=payload, headers=self._headers())
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                status = None
            else:
                status = response.status_code
                if status < 400:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise ChatResponseError(
                            f"chat API {url} answered HTTP {status} with a non-JSON body: {response.text[:300]!r}"
                        ) from exc
                message = _server_message(response)
                if status != 429 and status < 500:
                    raise ChatHTTPError(status, message, url)
                last = f"HTTP {status}: {message}"
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt == self.max_retries:
                break
            delay = self._delay(attempt, retry_after)
            self.stats.add("retries")
            log.warning(
                "chat API %s failed (%s); retry %d/%d in %.2fs", url, last, attempt + 1, self.max_retries, delay
            )
            time.sleep(delay)
        attempts = self.max_retries + 1
        if status is None:
            raise ChatConnectionError(f"chat API {url} unreachable after {attempts} attempts: {last}")
        raise ChatHTTPError(status, message, url, attempts)
