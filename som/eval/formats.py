"""Readers of the published benchmark files and answer files, and the error they raise.

Why a module of its own, at the bottom of `som.eval`: items (`som.eval.items`) and every
benchmark scorer (`som.eval.benchmarks.*`) report broken input the same way, so both import
from here and neither imports the other for it.

The readers turn a broken input into a `FormatError` that names the file and the line, so a
user with a half-written answers file learns where it breaks instead of getting a KeyError.
Standard library only: `som eval score --help` must stay instant.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


class FormatError(ValueError):
    """An input file that cannot be scored; the message names the file (and line) at fault."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSON Lines file."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise FormatError(path, f"cannot open: {exc.strerror or exc}") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FormatError(path, f"not valid JSON ({exc.msg})", number) from exc
            if not isinstance(record, dict):
                raise FormatError(path, f"expected a JSON object, got {type(record).__name__}", number)
            yield number, record


def read_json(path: str | Path) -> Any:
    """Load a whole JSON document, with the file named in any error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FormatError(path, f"cannot open: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(path, f"not valid JSON ({exc.msg})", exc.lineno) from exc


def require(record: Mapping[str, Any], key: str, path: str | Path, line: int | None) -> Any:
    """`record[key]`, or a FormatError saying which file and line lacks it."""
    try:
        return record[key]
    except KeyError:
        raise FormatError(path, f"missing field {key!r}", line) from None


def text_field(record: Mapping[str, Any], key: str, path: str | Path, line: int | None) -> str:
    """A field that must hold a string (model answers, questions, labels)."""
    value = require(record, key, path, line)
    if not isinstance(value, str):
        raise FormatError(path, f"field {key!r} must be a string, got {type(value).__name__}", line)
    return value
