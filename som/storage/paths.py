"""URL paths: joining parts onto any protocol's URL, and content-addressed keys."""

from __future__ import annotations

import os
import re


def join(url: str, *parts: str) -> str:
    """Join path parts onto a URL with '/', whatever the protocol (S3 keys are not OS paths).

    Empty parts are skipped; '..' is refused because S3 keys do not resolve it."""
    base = os.fspath(url)
    pieces = [p.strip("/") for p in parts if p and p.strip("/")]
    for piece in pieces:
        if ".." in piece.split("/"):
            raise ValueError(f"refusing '..' in path part {piece!r}")
    if not pieces:
        return base
    scheme, sep, rest = base.partition("://")
    if not sep:
        scheme, rest = "", base
    head = rest.rstrip("/")
    if not head and rest.startswith("/"):
        head = ""  # a root such as "/" or "file:///": keep its single leading slash
        pieces[0] = "/" + pieces[0]
    joined = "/".join([head, *pieces]) if head else "/".join(pieces)
    return f"{scheme}{sep}{joined}"


_SHA256 = re.compile(r"[0-9a-f]{64}")


def content_key(sha256: str, suffix: str) -> str:
    """Key of a content-addressed object: ``marks/<sha256>.<suffix>``.

    Keyed by the hash of the source bytes, so the same image is stored once however many
    times or under however many names it is submitted."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
    suffix = suffix.lstrip(".")
    if not suffix or "/" in suffix:
        raise ValueError(f"bad suffix {suffix!r}")
    return f"marks/{sha256}.{suffix}"
