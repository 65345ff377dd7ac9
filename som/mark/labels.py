"""Tag label text: numbers (1, 2, ...) or bijective base-26 letters (a..z, aa, ab, ...)."""

from __future__ import annotations

from typing import Literal

LabelMode = Literal["number", "alpha"]


def alpha_label(number: int) -> str:
    """1 -> 'a', 26 -> 'z', 27 -> 'aa', 702 -> 'zz', 703 -> 'aaa' (no zero digit)."""
    if number < 1:
        raise ValueError(f"tag numbers start at 1, got {number}")
    letters = []
    while number:
        number, remainder = divmod(number - 1, 26)
        letters.append(chr(ord("a") + remainder))
    return "".join(reversed(letters))


def tag_label(number: int, mode: LabelMode) -> str:
    if mode == "number":
        return str(number)
    if mode == "alpha":
        return alpha_label(number)
    raise ValueError(f"unknown label mode {mode!r}; use 'number' or 'alpha'")
