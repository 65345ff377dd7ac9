"""OpenAI chat messages as a checked conversation: roles, text and image bytes per turn.

Why: the server, `som chat` and the engine all take OpenAI-shaped messages (content a string
or a list of ``text`` / ``image_url`` parts, images as data URLs or http(s) URLs). Turning
them into `Turn`s in one place means a bad message gets the same `RequestError` (a 400 with
the reason) wherever it comes from, and prompt rendering (som.serve.prompting) sees only
plain text and image bytes.

Images are fetched with a size limit and a timeout and checked with the safe loader
(som.images.decode_image, the one `som mark` uses): pixel limit, corrupt or truncated data.
The bytes themselves are what the model gets, decoded by the prompt profile exactly as an
evaluation decodes a question's image.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from som.serve.errors import RequestError

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
SYSTEM_ALIASES = frozenset({"system", "developer"})  # newer OpenAI clients send "developer"


@dataclass(frozen=True)
class ImageLimits:
    """What one image may cost the server.

    max_bytes: encoded size (data URL payload or download). max_pixels: width x height,
    checked before decoding. fetch_timeout_s: per http(s) download. allow_urls: whether
    http(s) image URLs are fetched at all (data URLs always work)."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    fetch_timeout_s: float = 10.0
    allow_urls: bool = True


@dataclass(frozen=True)
class Turn:
    """One message: `role` (system, user or assistant), its text parts joined by newlines and
    its images (encoded bytes, in order). Images come before the text when rendered, as in
    LLaVA's prompts and somflow's evaluation."""

    role: str
    text: str
    images: tuple[bytes, ...] = ()


ImageFetcher = Callable[[str], bytes]


def image_bytes(url: str, limits: ImageLimits = ImageLimits()) -> bytes:
    """The checked bytes of an ``image_url``: a base64 data URL or an http(s) URL.

    Raises RequestError (400) for an unsupported URL, bad base64, an image over the size or
    pixel limit, a failed download, or data that is not a readable image."""
    if url.startswith("data:"):
        data = _data_url(url, limits)
        source = "data URL image"
    elif url.startswith(("http://", "https://")):
        if not limits.allow_urls:
            raise RequestError(
                "image URLs are not fetched by this server; send the image as a base64 data URL", param="image_url"
            )
        data = _download(url, limits)
        source = url[:200]
    else:
        raise RequestError(
            f"unsupported image URL {url[:60]!r}: send a data:image/...;base64 URL or http(s)", param="image_url"
        )
    check_image(data, source, limits)
    return data


def data_url(data: bytes) -> str:
    """A base64 data URL of checked image bytes, with the MIME type of their format (any
    format the safe loader reads: JPEG, PNG, BMP, TIFF, ...)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        mime = Image.MIME.get(image.format or "", "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def check_image(data: bytes, source: str, limits: ImageLimits) -> None:
    """RequestError with the safe loader's reason when `data` is not a usable image."""
    from som.images import ImageLoadError, decode_image

    try:
        decode_image(data, source, max_pixels=limits.max_pixels)
    except ImageLoadError as exc:
        raise RequestError(
            f"invalid image ({exc.source}): {exc.reason}", code="invalid_image", param="image_url"
        ) from None


def _data_url(url: str, limits: ImageLimits) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise RequestError("image data URLs must be base64: data:image/png;base64,...", param="image_url")
    if len(payload) > limits.max_bytes * 4 // 3 + 4:
        raise RequestError(
            f"image is larger than the limit of {limits.max_bytes} bytes", code="image_too_large", param="image_url"
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("image data URL is not valid base64", code="invalid_image", param="image_url") from None


def _download(url: str, limits: ImageLimits) -> bytes:
    import httpx

    chunks: list[bytes] = []
    size = 0
    try:
        with httpx.stream("GET", url, timeout=limits.fetch_timeout_s, follow_redirects=True) as response:
            if response.status_code >= 400:
                raise RequestError(
                    f"fetching image {url[:200]} failed: HTTP {response.status_code}",
                    code="image_fetch_failed",
                    param="image_url",
                )
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limits.max_bytes:
                    raise RequestError(
                        f"image at {url[:200]} is larger than the limit of {limits.max_bytes} bytes",
                        code="image_too_large",
                        param="image_url",
                    )
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise RequestError(
            f"fetching image {url[:200]} failed: {type(exc).__name__}: {exc}",
            code="image_fetch_failed",
            param="image_url",
        ) from None
    log.debug("fetched %s (%d bytes)", url[:200], size)
    return b"".join(chunks)


def parse_messages(messages: Any, fetch: ImageFetcher = image_bytes) -> list[Turn]:
    """`messages` as turns; RequestError names the first problem.

    Rules: a non-empty list; roles system/developer (first message only), user, assistant;
    content a string or a list of ``text`` / ``image_url`` parts; images only in user
    messages; the last message from the user (the one to answer)."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise RequestError("messages must be a non-empty list", param="messages")
    turns = [_turn(number, message, fetch) for number, message in enumerate(messages)]
    for number, turn in enumerate(turns):
        if turn.role == "system" and number > 0:
            raise RequestError(f"messages[{number}]: a system message may only come first", param="messages")
    if turns[-1].role != "user":
        raise RequestError("the last message must be the user's (the one to answer)", param="messages")
    return turns


def _turn(number: int, message: Any, fetch: ImageFetcher) -> Turn:
    where = f"messages[{number}]"
    if not isinstance(message, Mapping):
        raise RequestError(f"{where} must be an object with role and content", param="messages")
    role = message.get("role")
    if role in SYSTEM_ALIASES:
        role = "system"
    if role not in ROLES:
        raise RequestError(f"{where}: role must be one of system, user, assistant; got {role!r}", param="messages")
    content = message.get("content")
    if isinstance(content, str):
        return Turn(role, content)
    if not isinstance(content, Sequence) or not content:
        raise RequestError(f"{where}: content must be a string or a non-empty list of parts", param="messages")
    texts: list[str] = []
    images: list[bytes] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            if role != "user":
                raise RequestError(f"{where}: only user messages may hold images", param="messages")
            images.append(fetch(_part_url(part, f"{where}.content[{index}]")))
        else:
            raise RequestError(
                f"{where}.content[{index}]: expected a text part {{type: text, text}} or an "
                f"image part {{type: image_url, image_url: {{url}}}}, got {str(part)[:80]}",
                param="messages",
            )
    return Turn(role, "\n".join(texts), tuple(images))


def _part_url(part: Mapping[str, Any], where: str) -> str:
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, Mapping) else image_url
    if not isinstance(url, str) or not url:
        raise RequestError(f"{where}: image_url needs a url", param="messages")
    return url


def image_count(messages: Any) -> int:
    """How many image parts `messages` holds (before fetching any), for the per-request limit."""
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        return 0
    return sum(
        1
        for m in messages
        if isinstance(m, Mapping) and isinstance(m.get("content"), list)
        for p in m["content"]
        if isinstance(p, Mapping) and p.get("type") == "image_url"
    )
