"""Errors of serving that are the client's fault, with the HTTP status and OpenAI error code
they become.

Why one exception type: parsing messages, fetching images and rendering prompts happen in
the engine (also used by `som chat`, without HTTP) and in the server; raising one
`RequestError` everywhere lets the server answer a 4xx with the reason instead of a 500, and
lets the chat print the reason.
"""

from __future__ import annotations


class RequestError(ValueError):
    """A request that cannot be answered as sent; `status` and `code` are its HTTP rendering."""

    def __init__(
        self, message: str, *, status: int = 400, code: str = "invalid_request", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param


class EngineError(RuntimeError):
    """An engine that cannot be started as asked (missing GPU, library, model); the message
    says what to install or pass instead."""
