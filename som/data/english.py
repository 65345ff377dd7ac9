"""The bits of English grammar the QA answers need: plurals, articles and lists of labels."""

from __future__ import annotations

from collections.abc import Sequence

_IRREGULAR_PLURALS = {
    "person": "people",
    "man": "men",
    "woman": "women",
    "child": "children",
    "mouse": "mice",
    "knife": "knives",
    "leaf": "leaves",
    "shelf": "shelves",
    "wolf": "wolves",
    "foot": "feet",
    "tooth": "teeth",
    "sheep": "sheep",
    "deer": "deer",
    "fish": "fish",
    "broccoli": "broccoli",
    "skis": "skis",
    "scissors": "scissors",
    "glasses": "glasses",
    "jeans": "jeans",
}


def plural(name: str) -> str:
    """English plural of a (possibly multi-word) noun: the last word is inflected."""
    head, _, last = name.rpartition(" ")
    lower = last.lower()
    if lower in _IRREGULAR_PLURALS:
        word = _IRREGULAR_PLURALS[lower]
    elif lower.endswith(("s", "x", "z", "ch", "sh")):
        word = last + "es"
    elif lower.endswith("y") and len(lower) > 1 and lower[-2] not in "aeiou":
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def article(name: str) -> str:
    """The indefinite article by the first letter (the questions' nouns are COCO-like category names)."""
    return "an" if name[:1].lower() in "aeiou" else "a"


def join_words(items: Sequence[str]) -> str:
    """'1', '1 and 2', '1, 2 and 3'."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"
