"""LLaVA's instruction record format, in one place for the code that writes records (listing,
QA), checks them (`som data check`) and mixes them (`som data mix`).

A record is `{"id", "image"?, "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": ...}, ...]}`: turns alternate human/gpt starting with human, and an
image record's first human turn opens with `<image>\\n`. `image` is one path or a list of
paths, relative to an image root (or full URLs / absolute paths without one).

Why one module: the writers, the checker and the mixer each had their own idea of what an id,
an image list and an image path are; a record the writer makes must be one the checker
accepts and the mixer locates, so the three read the same definitions.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from som import storage

IMAGE_TOKEN = "<image>"


def llava_record(record_id: str, image: str, turns: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A LLaVA record: `<image>\\n` opens the first human turn and appears nowhere else."""
    if not turns:
        raise ValueError("a conversation needs at least one (question, answer) turn")
    conversations = []
    for number, (question, answer) in enumerate(turns):
        if IMAGE_TOKEN in question or IMAGE_TOKEN in answer:
            raise ValueError(f"{IMAGE_TOKEN} must not appear inside a question or answer: {question!r}")
        if not question.strip() or not answer.strip():
            raise ValueError(f"empty question or answer in {record_id}")
        value = f"{IMAGE_TOKEN}\n{question}" if number == 0 else question
        conversations.append({"from": "human", "value": value})
        conversations.append({"from": "gpt", "value": answer})
    return {"id": record_id, "image": image, "conversations": conversations}


def record_problems(record: Any) -> list[str]:
    """What is wrong with a record's LLaVA shape ([] when nothing)."""
    if not isinstance(record, dict):
        return ["not an object"]
    problems = []
    if record_id(record) is None:
        problems.append("missing or empty id")
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return problems + ["no conversations"]
    for number, turn in enumerate(turns):
        expected = "human" if number % 2 == 0 else "gpt"
        if not isinstance(turn, dict) or turn.get("from") != expected:
            problems.append(f"turn {number} is not from {expected}")
        elif not isinstance(turn.get("value"), str) or not turn["value"].strip():
            problems.append(f"turn {number} is empty")
    if len(turns) % 2:
        problems.append("the last turn is not an answer")
    values = [t.get("value", "") if isinstance(t, dict) else "" for t in turns]
    tokens = sum(str(v).count(IMAGE_TOKEN) for v in values)
    if "image" in record:
        if tokens != 1 or not str(values[0]).startswith(f"{IMAGE_TOKEN}\n"):
            problems.append(f"{IMAGE_TOKEN} must open the first human turn exactly once")
    elif tokens:
        problems.append(f"{IMAGE_TOKEN} in a record without an image")
    return problems


def record_id(record: Any) -> str | None:
    """The record's id as a string; None when it has none (missing, empty, not str or int)."""
    if isinstance(record, dict) and isinstance(record.get("id"), (str, int)) and record["id"] != "":
        return str(record["id"])
    return None


def id_digest(record_id: str) -> bytes:
    """A 64-bit hash of an id: duplicate detection over millions of records keeps 8 bytes each
    (a false match has odds of about 2^-64 per pair; the mixer confirms matches exactly)."""
    return hashlib.blake2b(record_id.encode("utf-8"), digest_size=8).digest()


def record_images(record: Mapping[str, Any]) -> list[str]:
    """The record's image paths as given ([] for a text-only record)."""
    image = record.get("image")
    if image is None:
        return []
    return [image] if isinstance(image, str) else [str(i) for i in image]


def checked_images(record: Mapping[str, Any]) -> list[str] | None:
    """`record_images`, or None when `image` is neither a path nor a non-empty list of paths."""
    image = record.get("image")
    if image is not None and not (
        (isinstance(image, str) and image)
        or (isinstance(image, list) and image and all(isinstance(i, str) and i for i in image))
    ):
        return None
    return record_images(record)


def image_reference(uri: str, image_root: str | None = None) -> str:
    """The record's image path: relative to `image_root`, or `uri` itself without a root."""
    if image_root is None:
        return uri
    root, path = _without_file_scheme(image_root).rstrip("/"), _without_file_scheme(uri)
    if not path.startswith(root + "/"):
        raise ValueError(f"image {uri} is not under the image root {image_root}")
    return path[len(root) + 1 :]


def _without_file_scheme(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


def under_root(image: str, root: str | None) -> str | None:
    """Where a record's image is (the inverse of `image_reference`): relative paths under the
    root (with '.' and '..' resolved); full URLs and absolute paths as given. None for a
    relative path that leaves the root, which storage.join refuses (S3 keys do not resolve
    '..') and which is a problem to report."""
    if not root or "://" in image or image.startswith("/"):
        return image
    relative = posixpath.normpath(image.replace("\\", "/"))
    if relative == ".." or relative.startswith("../"):
        return None
    return storage.join(root, relative)
