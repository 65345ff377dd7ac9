"""Running the app with uvicorn on a socket we bind ourselves.

Why bind first: with port 0 the OS picks a free port, and the caller learns it before the
server runs (a Slurm job writes it to endpoint.json, tests and benchmarks connect to it). The
socket listens from the moment it is bound, so a client that reads the endpoint early waits
in the backlog instead of being refused.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn with hooks once it serves and once it has shut down. Why hooks rather than code
    around `run`: on SIGTERM uvicorn re-raises the signal after shutting down, which ends the
    process before anything after `run` executes."""

    def __init__(
        self, config: uvicorn.Config, on_ready: Callable[[], None] | None, on_stop: Callable[[], None] | None
    ) -> None:
        super().__init__(config)
        self._on_ready = on_ready
        self._on_stop = on_stop

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_ready is not None:
            self._on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets=sockets)
        finally:
            if self._on_stop is not None:
                self._on_stop()


class Server:
    """uvicorn serving `app` on a bound socket; `run` blocks (Ctrl-C / SIGTERM stop it),
    `start` runs it in a thread until `stop`. `on_ready` runs once requests are served,
    `on_stop` once the server has shut down (both in the server's thread)."""

    def __init__(
        self,
        app: Any,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        log_level: str = "warning",
        on_ready: Callable[[], None] | None = None,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.socket = bind(host, port)
        self.host = host
        self.port = int(self.socket.getsockname()[1])
        config = uvicorn.Config(
            app, log_level=log_level, timeout_graceful_shutdown=5, access_log=log_level in ("info", "debug")
        )
        self._uvicorn = _Uvicorn(config, on_ready, on_stop)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        log.info("serving on %s", self.url)
        self._uvicorn.run(sockets=[self.socket])

    def start(self, timeout_s: float = 30.0) -> Server:
        self._thread = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [self.socket]}, name="som-serve", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.socket.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
