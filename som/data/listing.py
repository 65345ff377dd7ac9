"""Listing records: one instruction drawn from a pool of ~40 (a data file) and an answer that
names every tag in ascending tag order, one per line, "1. dog" or "1. dog: a brown terrier".

The question for an image depends only on the run seed and the image's sha256
(`som.data.seeding`), so the same image gets the same record whatever else is in the batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from som.data.llava import IMAGE_TOKEN, image_reference, llava_record
from som.data.naming import Names, names_by_id
from som.data.seeding import seeded_rng

DEFAULT_QUESTIONS = "listing_questions.txt"


def load_question_pool(path: str | Path | None = None) -> tuple[str, ...]:
    """Questions, one per line ('#' comments and blank lines skipped); default: the package's."""
    if path is None:
        text = resources.files("som.data").joinpath("prompts", DEFAULT_QUESTIONS).read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    questions = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not questions:
        raise ValueError(f"no questions in {path or DEFAULT_QUESTIONS}")
    for question in questions:
        if IMAGE_TOKEN in question:
            raise ValueError(f"question pool lines must not contain {IMAGE_TOKEN}: {question!r}")
    if len(set(questions)) != len(questions):
        raise ValueError(f"duplicate questions in {path or DEFAULT_QUESTIONS}")
    return questions


@lru_cache(maxsize=1)
def _default_pool() -> tuple[str, ...]:
    return load_question_pool()


@dataclass(frozen=True)
class ListingConfig:
    """Arguments:
    seed: run seed; the question for an image depends on it and the image's sha256 only.
    keep_unlabeled: list unlabeled tags as `unlabeled_name` instead of leaving them out.
    questions: the instruction pool (default: som/data/prompts/listing_questions.txt).
    """

    seed: int = 0
    keep_unlabeled: bool = False
    unlabeled_name: str = "unlabeled object"
    id_prefix: str = "som-listing"
    questions: tuple[str, ...] | None = None


def listing_answer(marks: Mapping[str, Any], names: Names, config: ListingConfig = ListingConfig()) -> str | None:
    """One line per tag, ascending: "N. name" or "N. name: description"; None if no line."""
    by_id = names_by_id(names)
    lines = []
    for mark in sorted(marks.get("marks") or [], key=lambda m: m["id"]):
        tag = by_id.get(mark["id"])
        name: str | None
        if tag is None or not tag.labeled:
            if not config.keep_unlabeled:
                continue
            name, description = config.unlabeled_name, None
        else:
            name, description = tag.name, tag.description
        line = f"{mark['label']}. {name}"
        lines.append(f"{line}: {description.strip()}" if description and description.strip() else line)
    return "\n".join(lines) if lines else None


def build_listing(
    marks: Mapping[str, Any],
    names: Names,
    image_uri: str,
    *,
    image_root: str | None = None,
    config: ListingConfig = ListingConfig(),
) -> dict[str, Any] | None:
    """The listing record of one marked image; None when it was skipped or lists nothing."""
    if marks.get("skipped"):
        return None
    answer = listing_answer(marks, names, config)
    if answer is None:
        return None
    pool = config.questions or _default_pool()
    question = seeded_rng(config.seed, marks.get("sha256", ""), "listing").choice(pool)
    record_id = f"{config.id_prefix}-{marks['sha256'][:16]}"
    return llava_record(record_id, image_reference(image_uri, image_root), [(question, answer)])
