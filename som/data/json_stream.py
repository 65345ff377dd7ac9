"""A JSON array read from a binary stream one element at a time, in bounded memory.

Why not `json.load`: LLaVA instruction files run to a gigabyte (llava_v1_5_mix665k.json), and
`som data check` / `som data mix` must read them on machines that cannot hold them several
times over, and say where a malformed element sits (element index, byte offset, line) instead
of failing at the end or not at all.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import Any, Protocol

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_LOOKAHEAD = 16  # chars past a decode error that prove it is not just the chunk's end


class ByteStream(Protocol):
    """What the reader needs of its input: `read(size)` giving bytes (a file opened "rb", an
    fsspec file, a wrapper that hashes what passes through)."""

    def read(self, size: int = -1, /) -> bytes: ...


class JsonArrayError(ValueError):
    """The stream is not a JSON array of UTF-8 text; the message says where it stops being one."""


def iter_json_array(
    stream: ByteStream, *, chunk_size: int = 1 << 20, max_record_chars: int = 64 << 20, with_text: bool = False
) -> Iterator[Any]:
    """The elements of a JSON array read from a binary stream, one at a time.

    With `with_text`, (element, its source text) pairs. Holds at most one chunk plus the
    element being parsed; an element over `max_record_chars` is an error, not a read to EOF.
    A decode error with data after it is final at once (reading on until the size limit
    made a malformed record in a 200 MB file cost 400 MB and lose its position), so errors
    name the element index, byte offset and line. Non-UTF-8 input is an error naming the
    byte, not a UnicodeDecodeError."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8-sig")()
    buffer, pos, eof = "", 0, False
    # For error messages: bytes read, lines before buffer[0], and where the current line
    # starts (a char offset relative to buffer[0]). Byte offsets are derived at failure.
    dropped_lines, line_start, bytes_read = 0, 0, 0
    index = 0
    not_utf8: str | None = None  # set when a chunk holds invalid UTF-8: input ends there

    def more(size: int) -> bool:
        nonlocal buffer, pos, eof, dropped_lines, line_start, bytes_read, not_utf8
        if eof:
            return False
        data = stream.read(size)
        eof = not data
        try:
            text = utf8.decode(data, final=eof)
            bytes_read += len(data)
        except UnicodeDecodeError as exc:
            # Parse up to the bad byte, then stop: the error names the element it falls in.
            bad_byte = exc.object[exc.start]
            text = exc.object[: exc.start].decode("utf-8")
            if bytes_read == 0:
                text = text.removeprefix("\ufeff")
            bytes_read += len(data) - (len(exc.object) - exc.start)  # the bad byte's offset
            utf8.reset()
            eof = True
            not_utf8 = f"not UTF-8 text: byte 0x{bad_byte:02x}"
        newlines = buffer.count("\n", 0, pos)  # counted in place: no copy of the dropped text
        if newlines:
            dropped_lines += newlines
            line_start = buffer.rindex("\n", 0, pos) + 1 - pos
        else:
            line_start -= pos
        buffer = buffer[pos:] + text
        pos = 0
        return True

    def skip_space() -> None:
        nonlocal pos
        while True:
            pos = _WHITESPACE.match(buffer, pos).end()  # type: ignore[union-attr]  # `*` always matches
            if pos < len(buffer) or not more(chunk_size):
                return

    def where(at: int) -> str:
        pending = len(utf8.getstate()[0])  # bytes read but not yet decoded
        byte = bytes_read - pending - len(buffer[at:].encode("utf-8", "surrogatepass"))
        newlines = buffer.count("\n", 0, at)
        line = dropped_lines + newlines + 1
        column = at - (buffer.rindex("\n", 0, at) + 1 if newlines else line_start) + 1
        return f"element {index} (byte offset {byte}, line {line}, column {column})"

    def fail(message: str, at: int | None = None) -> JsonArrayError:
        if not_utf8:
            return JsonArrayError(
                f"{not_utf8} at {where(len(buffer))}; JSON must be UTF-8 (re-encode it, e.g. iconv -f latin1 -t utf-8)"
            )
        return JsonArrayError(f"{message} at {where(pos if at is None else at)}")

    skip_space()
    if buffer[pos : pos + 1] != "[":
        raise fail("expected a JSON array ('[')")
    pos += 1
    first = True
    while True:
        skip_space()
        if pos >= len(buffer):
            raise fail("unexpected end of input inside the array")
        if buffer[pos] == "]" and first:
            pos += 1
            break
        while True:
            try:
                value, end = decoder.raw_decode(buffer, pos)
                if end < len(buffer) or eof:  # a value at the buffer's end may continue
                    break
            except json.JSONDecodeError as exc:
                # Final unless the error may just be the chunk's end: an unterminated string
                # or an error within a token's length of the end.
                truncated = exc.msg.startswith("Unterminated string") or exc.pos + _LOOKAHEAD >= len(buffer)
                if eof or not truncated:
                    raise fail(f"malformed JSON ({exc.msg})", exc.pos) from None
            if len(buffer) - pos > max_record_chars:
                raise fail(f"an element exceeds {max_record_chars} characters or is malformed")
            more(max(chunk_size, len(buffer) - pos))
        yield (value, buffer[pos:end]) if with_text else value
        pos, first = end, False
        index += 1
        skip_space()
        if buffer[pos : pos + 1] == ",":
            pos += 1
        elif buffer[pos : pos + 1] == "]":
            pos += 1
            break
        elif pos >= len(buffer):
            raise fail("unexpected end of input inside the array")
        else:
            raise fail("expected ',' or ']' after the previous element")
    skip_space()
    if pos < len(buffer):
        raise fail("unexpected data after the array")
