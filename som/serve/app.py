"""The OpenAI-compatible HTTP API in front of an engine (som.serve.engine).

Endpoints: ``POST /v1/chat/completions`` (JSON, or server-sent events with ``stream: true``
in OpenAI's chunk format ending with ``data: [DONE]``), ``GET /v1/models``, ``GET /health``.

Why these rules:
- Bad input is the client's fault and gets a 4xx in OpenAI's error shape
  ``{"error": {"message", "type", "code", "param"}}``, never a 500: malformed JSON or fields
  (FastAPI's 422 becomes 400), a corrupt or oversized image, too many images, an unknown model
  (404), a missing or wrong bearer token (401), a body over the limit (413).
- One model answers one request at a time (the engine's lock); `max_concurrency` bounds the
  requests admitted at once (generating + waiting), and the next one gets 429 with
  Retry-After, which som.chat_api and the openai client retry.
- With `tags` set, every image is marked (som.serve.marking, as `som mark` draws it) before
  the model sees it, and the response's extra ``som`` field carries each image's marks
  (``{"images": [{"marks": [...], "width", "height", ...}]}``) so a client can map "tag 3"
  back to pixels.
- Images are checked by the safe loader before the engine runs (som.serve.messages); the
  engine gets the same bytes (as data URLs), so its pixels equal an evaluation's.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from som.eval.tagging import TagConfig
from som.serve.engine import Engine, GenerationStats
from som.serve.errors import RequestError
from som.serve.messages import ImageLimits, data_url, image_bytes, image_count

__all__ = ["APIError", "ServeSettings", "create_app", "error_body"]

log = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


@dataclass(frozen=True)
class ServeSettings:
    """Limits and options of one server.

    api_key: bearer token every /v1 request must carry (None: open, fine on 127.0.0.1).
    max_tokens: the largest max_tokens a request may ask for, and the default.
    max_concurrency: requests admitted at once (one generates, the rest wait); more get 429.
    max_body_bytes: request body limit (images travel inline, so keep room for them).
    max_images: images per request. images: per-image limits (bytes, pixels, URL fetching).
    tags: mark every image with this configuration (--tags auto); None: images as sent.
    """

    api_key: str | None = None
    max_tokens: int = 2048
    max_concurrency: int = 4
    max_body_bytes: int = 32 * 1024 * 1024
    max_images: int = 4
    images: ImageLimits = field(default_factory=ImageLimits)
    tags: TagConfig | None = None


class ChatCompletionRequest(BaseModel):
    """The fields of OpenAI's request this server uses; others are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[Any]
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    n: int | None = Field(default=None, ge=1, le=1)
    stream_options: dict[str, Any] | None = None


class APIError(Exception):
    """An error response: HTTP `status`, OpenAI `code`, optional headers."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = dict(headers or {})


def error_body(status: int, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "code": code, "param": param}
    }


class _Admission:
    """Counts requests in the server (the event loop is one thread: no lock needed)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> None:
        if self.active >= self.limit:
            raise APIError(
                429,
                f"the server is busy ({self.limit} requests in progress); retry shortly",
                "server_busy",
                headers={"Retry-After": "1"},
            )
        self.active += 1

    def leave(self) -> None:
        self.active -= 1


class _Slot:
    """One admitted request; `release` is safe to call more than once."""

    def __init__(self, admission: _Admission) -> None:
        admission.enter()
        self._admission: _Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            self._admission.leave()
            self._admission = None


def create_app(engine: Engine, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The FastAPI app serving `engine` under `settings`."""
    app = FastAPI(
        title="somflow",
        description=f"OpenAI-compatible chat API for {engine.name}",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    admission = _Admission(settings.max_concurrency)
    marking = threading.Lock()  # one segmentation at a time: parallel ones only thrash the CPU
    _install_error_handlers(app)

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", "missing_api_key")
        if not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise APIError(401, "invalid API key", "invalid_api_key")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": engine.name, "active_requests": admission.active}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": 0, "owned_by": "somflow"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        authorize(request)
        body = _parse(await _read_body(request, settings.max_body_bytes))
        max_tokens = _max_tokens(body, settings)
        if body.model not in (None, engine.name):
            raise APIError(
                404,
                f"model {body.model!r} is not served here; this server serves {engine.name!r}",
                "model_not_found",
                param="model",
            )
        images = image_count(body.messages)
        if images > settings.max_images:
            raise APIError(
                400,
                f"{images} images in one request; this server takes at most {settings.max_images}",
                "too_many_images",
                param="messages",
            )
        slot = _Slot(admission)
        try:
            messages, marks = await run_in_threadpool(_prepare, body.messages, settings, marking)
            stats = GenerationStats()
            temperature = body.temperature or 0.0
            if body.stream:
                pieces = await run_in_threadpool(
                    engine.stream, messages, max_tokens=max_tokens, temperature=temperature, stats=stats
                )
                usage = bool((body.stream_options or {}).get("include_usage"))
                return StreamingResponse(
                    _events(engine.name, pieces, stats, marks, usage, slot),
                    media_type="text/event-stream",
                    background=BackgroundTask(slot.release),
                    headers={"Cache-Control": "no-cache"},
                )
            text = await run_in_threadpool(
                engine.complete, messages, max_tokens=max_tokens, temperature=temperature, stats=stats
            )
        except BaseException:
            slot.release()
            raise
        slot.release()
        return _completion(engine.name, text, stats, marks)

    return app


def _install_error_handlers(app: FastAPI) -> None:
    def respond(
        status: int, message: str, code: str | None, param: str | None = None, headers: Mapping[str, str] | None = None
    ) -> JSONResponse:
        return JSONResponse(error_body(status, message, code, param), status_code=status, headers=dict(headers or {}))

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return respond(exc.status, exc.message, exc.code, exc.param, exc.headers)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        return respond(exc.status, exc.message, exc.code, exc.param)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(400, _validation_message(exc.errors()), "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return respond(exc.status_code, str(exc.detail), None, headers=exc.headers)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s %s failed", request.method, request.url.path)
        return respond(500, f"internal server error: {type(exc).__name__}: {exc}", "internal_error")


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes (checked while reading)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body of {declared} bytes exceeds the limit of {limit}", "request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body exceeds the limit of {limit} bytes", "request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes) -> ChatCompletionRequest:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object", "invalid_request")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise APIError(400, _validation_message(exc.errors()), "invalid_request") from None


def _validation_message(errors: Any) -> str:
    parts = []
    for error in list(errors)[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _max_tokens(body: ChatCompletionRequest, settings: ServeSettings) -> int:
    asked = body.max_completion_tokens or body.max_tokens
    if asked is None:
        return settings.max_tokens
    if asked > settings.max_tokens:
        raise APIError(
            400,
            f"max_tokens {asked} exceeds this server's limit of {settings.max_tokens}",
            "max_tokens_too_large",
            param="max_tokens",
        )
    return asked


def _prepare(
    messages: list[Any], settings: ServeSettings, marking: threading.Lock
) -> tuple[list[Any], list[dict[str, Any]] | None]:
    """`messages` with every image fetched, checked and (with tags) marked under `marking`,
    as data URLs, and the marks of each image (None without tags). Malformed parts are left
    for the engine's parser to reject with its message."""
    marked: list[dict[str, Any]] | None = [] if settings.tags is not None else None
    prepared = []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            prepared.append(message)
            continue
        parts = []
        for part in content:
            url = _image_url(part)
            if url is None:
                parts.append(part)
                continue
            data = image_bytes(url, settings.images)
            if settings.tags is not None and marked is not None:
                with marking:
                    data, info = _mark(data, settings.tags, f"image {len(marked)}")
                marked.append(info)
            parts.append({"type": "image_url", "image_url": {"url": data_url(data)}})
        prepared.append({**message, "content": parts})
    return prepared, marked


def _image_url(part: Any) -> str | None:
    if not isinstance(part, Mapping) or part.get("type") != "image_url":
        return None
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, Mapping) else image_url
    return url if isinstance(url, str) and url else None


def _mark(data: bytes, config: TagConfig, source: str) -> tuple[bytes, dict[str, Any]]:
    from som.images import ImageLoadError
    from som.serve.marking import mark_image

    try:
        marked = mark_image(data, config, source=source)
    except ImageLoadError as exc:
        raise RequestError(f"invalid image ({source}): {exc.reason}", code="invalid_image", param="messages") from None
    info = {
        "marks": marked.marks,
        "width": marked.width,
        "height": marked.height,
        "label_mode": marked.label_mode,
        "segmenter": marked.segmenter,
        "skipped": marked.skipped,
    }
    return marked.image, info


def _usage(stats: GenerationStats) -> dict[str, int]:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
    }


def _completion(model: str, text: str, stats: GenerationStats, marks: list[dict[str, Any]] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": stats.finish_reason,
            }
        ],
        "usage": _usage(stats),
    }
    if marks is not None:
        body["som"] = {"images": marks}
    return body


async def _events(
    model: str,
    pieces: Iterator[str],
    stats: GenerationStats,
    marks: list[dict[str, Any]] | None,
    include_usage: bool,
    slot: _Slot,
) -> AsyncIterator[str]:
    """OpenAI's chat.completion.chunk events for `pieces`, then ``data: [DONE]``. An error
    after the first event can no longer change the status: it is sent as an error event."""
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        return f"data: {json.dumps({**head, 'choices': choices, **extra})}\n\n"

    first: dict[str, Any] = {"som": {"images": marks}} if marks is not None else {}
    try:
        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}], **first)
        try:
            async for piece in iterate_in_threadpool(pieces):
                yield event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        except Exception as exc:  # reported to the client in the stream
            log.exception("streaming a completion failed")
            status = exc.status if isinstance(exc, RequestError) else 500
            yield f"data: {json.dumps(error_body(status, str(exc), getattr(exc, 'code', 'internal_error')))}\n\n"
            return
        yield event([{"index": 0, "delta": {}, "finish_reason": stats.finish_reason}])
        if include_usage:
            yield event([], usage=_usage(stats))
        yield "data: [DONE]\n\n"
    finally:
        slot.release()
        close = getattr(pieces, "close", None)
        if close is not None:
            with contextlib.suppress(ValueError):  # still running in a worker thread: it stops on its own
                close()
