"""Starting a server from its options, the same way on this machine and in a Slurm job.

Why one function: `som serve MODEL` and the Slurm job (som.serve.slurm) must build the same
engine, limits and marking from the same options; the job gets them pickled. The API key is
not part of the options (they are written to the submission folder): it travels as an
argument or through $SOMFLOW_API_KEY.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from som.serve.endpoint import remove_endpoint, write_endpoint

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000


@dataclass(frozen=True)
class ServeOptions:
    """Everything `som serve` was asked for (see its --help for each)."""

    model: str
    host: str | None = "127.0.0.1"
    """None: the Slurm node's address (som.serve.slurm)."""
    port: int = DEFAULT_PORT
    served_name: str | None = None
    prompt_profile: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    local_files_only: bool = False
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    tags: str = "none"
    segmenter: str = "auto"
    params: dict[str, Any] = field(default_factory=dict)
    mark_options: dict[str, Any] = field(default_factory=dict)
    max_tokens: int = 2048
    max_concurrency: int = 4
    max_images: int = 4
    max_body_mb: float = 32.0
    max_image_mb: float = 20.0
    max_pixels: int = 40_000_000
    image_urls: bool = True
    log_level: str = "info"

    @property
    def name(self) -> str:
        """The model name clients send and /v1/models lists."""
        return self.served_name or self.model


def tag_config(options: ServeOptions) -> Any:
    """The TagConfig of --tags auto (None for --tags none)."""
    from som.eval.tagging import TagConfig

    if options.tags == "none":
        return None
    return TagConfig.from_dict(
        {"segmenter": options.segmenter, "params": dict(options.params), "mark_options": dict(options.mark_options)}
    )


def settings(options: ServeOptions, api_key: str | None) -> Any:
    """The app's ServeSettings for `options` (sizes in MiB become bytes)."""
    from som.serve.app import ServeSettings
    from som.serve.messages import ImageLimits

    mib = 1024 * 1024
    return ServeSettings(
        api_key=api_key or None,
        max_tokens=options.max_tokens,
        max_concurrency=options.max_concurrency,
        max_body_bytes=int(options.max_body_mb * mib),
        max_images=options.max_images,
        images=ImageLimits(
            max_bytes=int(options.max_image_mb * mib), max_pixels=options.max_pixels, allow_urls=options.image_urls
        ),
        tags=tag_config(options),
    )


def warm_up_marking(config: Any) -> None:
    """Mark a small synthetic image once: a bad segmenter parameter fails at start-up, not on
    the first request, and the segmenter's weights are loaded before clients wait on them."""
    import numpy as np
    from PIL import Image

    from som.serve.marking import mark_image

    y, x = np.mgrid[0:96, 0:128]
    rgb = np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.uint8)
    rgb[20:60, 30:80] = (220, 40, 40)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    started = time.perf_counter()
    mark_image(buffer.getvalue(), config, source="warm-up image")
    log.info("marking ready (%s, %.1fs)", config.segmenter, time.perf_counter() - started)


def build_app(options: ServeOptions, api_key: str | None) -> Any:
    """The app for `options`: the engine loaded, marking checked."""
    from som.serve.app import create_app
    from som.serve.engine import local_engine
    from som.serve.messages import image_bytes

    serve_settings = settings(options, api_key)
    if serve_settings.tags is not None:
        warm_up_marking(serve_settings.tags)
    engine = local_engine(
        options.model,
        prompt_profile=options.prompt_profile,
        device=options.device,
        dtype=options.dtype,
        local_files_only=options.local_files_only,
        load_in_4bit=options.load_in_4bit,
        load_in_8bit=options.load_in_8bit,
        fetch=functools.partial(image_bytes, limits=serve_settings.images),
    )
    engine.name = options.name
    return create_app(engine, serve_settings)


def serve(
    options: ServeOptions,
    *,
    api_key: str | None = None,
    run_dir: str | Path | None = None,
    job_id: str | None = None,
    restarts: int = 0,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Load, listen, write RUN/endpoint.json (with `run_dir`), serve until stopped, then
    remove the endpoint file if it is still this server's. `announce` gets the line saying
    where the server listens (the CLI prints it; it is logged either way)."""
    from som.serve.server import Server

    if options.host is None:
        raise ValueError("ServeOptions.host is None outside a Slurm job; pass an address")
    app = build_app(options, api_key)
    if not api_key and options.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "serving on %s without --api-key: anyone who can reach this address can use the model", options.host
        )

    def publish() -> None:
        line = f"serving {options.name} on {server.url}/v1 (OpenAI-compatible; Ctrl-C stops)"
        log.info(line)
        if announce is not None:
            announce(line)
        if run_dir is not None:
            info = endpoint_info(
                server.host, server.port, options, job_id=job_id, restarts=restarts, api_key_required=bool(api_key)
            )
            log.info("endpoint written to %s", write_endpoint(run_dir, info))

    def unpublish() -> None:
        if run_dir is not None:
            remove_endpoint(run_dir, pid=os.getpid())

    server = Server(app, options.host, options.port, log_level=options.log_level, on_ready=publish, on_stop=unpublish)
    server.run()


def endpoint_info(
    host: str, port: int, options: ServeOptions, *, job_id: str | None, restarts: int, api_key_required: bool
) -> dict[str, Any]:
    """The endpoint.json record of a server listening on host:port (a wildcard address is
    advertised as this machine's name)."""
    advertised = socket.getfqdn() if host in ("0.0.0.0", "::") else host
    base = f"http://{f'[{advertised}]' if ':' in advertised else advertised}:{port}"
    node = (os.environ.get("SLURMD_NODENAME") if job_id else None) or socket.gethostname()
    return {
        "url": f"{base}/v1",
        "health": f"{base}/health",
        "node": node,
        "host": host,
        "port": port,
        "model": options.name,
        "job_id": job_id,
        "pid": os.getpid(),
        "restarts": restarts,
        "api_key_required": api_key_required,
        "tags": options.tags,
        "started": time.time(),
    }
