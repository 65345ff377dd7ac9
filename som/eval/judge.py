"""The GPT judge of MM-Vet and LLaVA-Bench: one pinned model behind an OpenAI-compatible API.

Why a class over som.chat_api.ChatClient rather than the client itself: a judged score is only
comparable with another one graded by the same model with the same prompt, so the judge is a
pinned model name that every score records (`record()`), temperature 0 unless a grading rule
says otherwise (MM-Vet's retries raise it on purpose), and every call cached.

Caching: with `cache_url` each reply is stored under the sha256 of the whole request (judge
model, messages, temperature, max_tokens) by ChatClient's response cache. The messages hold the
grading prompt, the question and the answer, so the key is (question, answer, judge model,
prompt) and a rerun, or a second benchmark run over the same answers, sends no request.
A changed prompt, answer or judge model is a different key: stale grades are never reused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from som.chat_api import ChatClient, ChatRequest

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Judge:
    """A judge model; thread-safe, at most `max_concurrency` requests in flight.

    Arguments:
    base_url: API root (``https://api.openai.com/v1``); None reads $SOMFLOW_CHAT_BASE_URL.
    model: the pinned judge model, e.g. "gpt-4-0613" (MM-Vet's) or "gpt-4-0314" (LLaVA's).
    api_key: None reads $OPENAI_API_KEY; never logged.
    cache_url: som.storage URL for cached replies (None: no cache).
    max_concurrency: parallel requests (also the thread count of `map`).
    client_kwargs: passed to ChatClient (max_retries, timeout, backoff_base, ...).
    """

    def __init__(
        self,
        base_url: str | None,
        model: str,
        api_key: str | None = None,
        *,
        cache_url: str | None = None,
        max_concurrency: int = 4,
        **client_kwargs: Any,
    ) -> None:
        if not model:
            raise ValueError("a judge needs a pinned model name (e.g. gpt-4-0613)")
        self._settings: dict[str, Any] = {
            "base_url": base_url,
            "model": model,
            "api_key": api_key,
            "max_concurrency": max_concurrency,
            **client_kwargs,
        }
        self.client = ChatClient(
            base_url, model, api_key, max_concurrency=max_concurrency, cache_url=cache_url, **client_kwargs
        )
        self.model = model
        self.cache_url = cache_url
        self.max_concurrency = max_concurrency

    def __repr__(self) -> str:
        return f"Judge({self.client!r})"

    def ask(
        self,
        prompt: str,
        temperature: float = 0.0,
        *,
        system: str | None = None,
        max_tokens: int | None = None,
        run: int = 0,
    ) -> str:
        """The judge's reply to one user prompt (after an optional system message).

        `run` numbers repeated gradings of the same request (MM-Vet's paper averages 5 runs,
        LLaVA-Bench 3): without it every repeat would be a cache hit returning the first reply.
        Run 0 keeps the plain request key, so caches written before runs existed stay valid."""
        messages: list[Mapping[str, Any]] = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        cache_key = None
        if run:
            plain = self.client.cache_key_for(ChatRequest(messages, temperature, max_tokens))
            cache_key = f"{plain}/run{run}"
        return self.client.complete(messages, temperature=temperature, max_tokens=max_tokens, cache_key=cache_key)

    def map(self, function: Callable[[T], R], inputs: Iterable[T]) -> list[R]:
        """`function` over `inputs` on `max_concurrency` threads, results in input order.

        For grading rules with their own retry loop (MM-Vet): each input's loop runs in one
        thread while other inputs are graded in parallel."""
        values = list(inputs)
        if not values:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(values)), thread_name_prefix="judge") as pool:
            return list(pool.map(function, values))

    def with_cache(self, cache_url: str | None) -> Judge:
        """This judge with replies cached under `cache_url`; itself when it has a cache already
        (an explicitly configured cache wins) or `cache_url` is None. Close the copy after use."""
        if cache_url is None or self.cache_url is not None:
            return self
        settings = dict(self._settings)
        return Judge(
            settings.pop("base_url"), settings.pop("model"), settings.pop("api_key"), cache_url=cache_url, **settings
        )

    def record(self) -> dict[str, Any]:
        """What a score must say about its judge (no secrets)."""
        stats = self.client.stats
        return {
            "model": self.model,
            "base_url": self.client.base_url,
            "requests": stats.requests,
            "cache_hits": stats.cache_hits,
            "cache_url": self.cache_url,
        }

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
