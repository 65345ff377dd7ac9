"""Names and short descriptions for the tags of a marked image, from a describer model behind
an OpenAI-compatible chat API (som.chat_api).

The model gets the marked image (inline, base64), a system message that explains the tags
with a few text-only examples (som/data/prompts/describer_system.txt and
describer_examples.json, or files of the caller's choice), and is asked for exactly one line
per tag, in tag order: ``N. name: short description``.

The answer is validated (each tag once, ascending, every line of that form, a non-empty
name). A malformed answer is sent back with a follow-up message saying what was wrong, up to
`max_attempts` answers in all; then the describer gives up and returns a result whose `error`
says why. A bad answer never raises; API failures (`som.chat_api.ChatAPIError`: a refused
key, a server still failing after its retries) do, because they are the caller's to fix.

Caching: every answer is cached by the chat client under a key made of the image's sha256,
a fingerprint of its tags (labels, segmenter, style: the same photo marked differently is a
different marked image), the prompt hash (system text, examples, model, request settings)
and the answers before it in the conversation. A rerun therefore replays the same
conversation from the cache without a single request, and editing a prompt file or
switching the model invalidates it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from som.chat_api import ChatClient, canonical_json, image_content, text_content
from som.data.naming import TagName, TagNames

log = logging.getLogger(__name__)

SOURCE_DESCRIBER = "describer"
DEFAULT_SYSTEM = "describer_system.txt"
DEFAULT_EXAMPLES = "describer_examples.json"
PROMPT_VERSION = 1
"""Bump when the request wording in this module changes (it is part of the prompt hash)."""

_LINE = re.compile(r"^\s*(?:[*_`]{1,3})?([0-9]+|[A-Za-z]{1,3})(?:[*_`]{1,3})?\s*[.)]\s*(.*?)\s*$")
_DECORATION = "*_`\"' "


# ----------------------------------------------------------------------------- prompt


@dataclass(frozen=True)
class DescriberExample:
    """A text-only in-context example: what the picture shows, its tag count, the answer."""

    scene: str
    tags: int
    answer: str


@dataclass(frozen=True)
class DescriberPrompt:
    """The system text and the examples; `hash(model)` keys the cache."""

    system: str
    examples: tuple[DescriberExample, ...] = ()

    @classmethod
    def load(cls, system_path: str | Path | None = None, examples_path: str | Path | None = None) -> DescriberPrompt:
        """From files; either left out comes from the package's som/data/prompts/."""
        system = _read_text(system_path, DEFAULT_SYSTEM).strip()
        if not system:
            raise ValueError(f"empty describer system prompt {system_path or DEFAULT_SYSTEM}")
        raw = json.loads(_read_text(examples_path, DEFAULT_EXAMPLES))
        if not isinstance(raw, list):
            raise ValueError(f"{examples_path or DEFAULT_EXAMPLES} must hold a JSON list of examples")
        examples = []
        for number, item in enumerate(raw):
            try:
                example = DescriberExample(str(item["scene"]), int(item["tags"]), str(item["answer"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"describer example {number} needs scene, tags and answer: {exc}") from exc
            labels = [str(i) for i in range(1, example.tags + 1)]
            problems = parse_answer(example.answer, labels)[1]
            if problems:
                raise ValueError(f"describer example {number} breaks the answer format: {problems}")
            examples.append(example)
        return cls(system, tuple(examples))

    def system_message(self) -> str:
        """The system text followed by the examples."""
        if not self.examples:
            return self.system
        parts = [self.system, "", "Examples (described in words here; you will see the real image):"]
        for example in self.examples:
            parts += ["", f"Picture: {example.scene} Tags: 1 to {example.tags}.", "Answer:", example.answer]
        return "\n".join(parts)

    def hash(self, model: str, settings: Mapping[str, Any] | None = None) -> str:
        """sha256 of everything that shapes the answer besides the image."""
        payload = {
            "version": PROMPT_VERSION,
            "system": self.system,
            "model": model,
            "examples": [vars(e) for e in self.examples],
            "settings": dict(settings or {}),
        }
        return hashlib.sha256(canonical_json(payload)).hexdigest()


def _read_text(path: str | Path | None, default: str) -> str:
    if path is None:
        return resources.files("som.data").joinpath("prompts", default).read_text("utf-8")
    return Path(path).read_text("utf-8")


# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class ParsedLine:
    label: str
    name: str
    description: str | None


def parse_answer(text: str, labels: Sequence[str]) -> tuple[list[ParsedLine], list[str]]:
    """The lines of an answer and the problems with it ([] when it is valid).

    `labels` are the tags' labels in tag order ("1", "2", … or "a", "b", … for letter
    labels; compared case-insensitively). Blank lines are ignored; every other line must be
    ``label. name[: description]`` (markdown emphasis around the label or name tolerated)."""
    wanted = [label.lower() for label in labels]
    position = {label: i for i, label in enumerate(wanted)}
    parsed: list[ParsedLine] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for raw in text.strip().splitlines():
        if not raw.strip() or raw.strip().startswith("```"):
            continue
        match = _LINE.match(raw)
        if match is None or match.group(1).lower() not in position:
            if match is not None and match.group(1).isdigit():
                problems.append(f"there is no tag {match.group(1)} (the tags are {_span(labels)})")
            else:
                problems.append(f"the line {raw.strip()[:80]!r} is not of the form 'N. name: short description'")
            continue
        label = match.group(1).lower()
        name, _, description = match.group(2).partition(":")
        name = name.strip(_DECORATION)
        description = description.strip(_DECORATION) or None
        if label in seen:
            problems.append(f"tag {labels[position[label]]} is listed more than once")
            continue
        seen[label] = len(parsed)
        if not name:
            problems.append(f"tag {labels[position[label]]} has no name")
        parsed.append(ParsedLine(labels[position[label]], name, description))
    missing = [labels[i] for i, label in enumerate(wanted) if label not in seen]
    if missing:
        problems.append(
            f"tag{'s' if len(missing) > 1 else ''} {', '.join(missing)} {'are' if len(missing) > 1 else 'is'} missing"
        )
    order = [position[line.label.lower()] for line in parsed]
    if order != sorted(order):
        problems.append(f"the tags are not in ascending order (got {', '.join(line.label for line in parsed)})")
    return parsed, problems


def _span(labels: Sequence[str]) -> str:
    return f"{labels[0]} to {labels[-1]}" if len(labels) > 1 else labels[0]


# ----------------------------------------------------------------------------- describer


@dataclass(frozen=True)
class DescriberConfig:
    """Arguments:
    max_attempts: answers asked for in all (the first + retries with feedback).
    temperature: 0 for reproducible answers (the cache makes reruns identical anyway).
    max_tokens: per answer; None: 200 + 60 per tag.
    system_as_user: put the system text in the user turn, for chat templates without a
      system role (some local vision models).
    image_detail: OpenAI's image "detail" ("high", "low", "auto") or None to leave it out.
    """

    max_attempts: int = 3
    temperature: float = 0.0
    max_tokens: int | None = None
    system_as_user: bool = False
    image_detail: str | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")

    def tokens_for(self, n_tags: int) -> int:
        return self.max_tokens if self.max_tokens is not None else 200 + 60 * n_tags


@dataclass(frozen=True)
class DescriberResult:
    """What the describer gave for one marked image.

    `tags` has one entry per tag in tag order: named (source "describer") when the answer was
    valid, unnamed (name None) when it gave up; `error` then says why."""

    image: str
    sha256: str
    tags: tuple[TagName, ...]
    model: str
    prompt_hash: str
    attempts: int
    answers: tuple[str, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def tag_names(self) -> TagNames:
        """As som.data.naming's TagNames (what the conversation builders take)."""
        return TagNames(self.image, self.sha256, self.tags)


@dataclass
class Describer:
    """Describes marked images with one chat client and one prompt."""

    client: ChatClient
    prompt: DescriberPrompt = field(default_factory=DescriberPrompt.load)
    config: DescriberConfig = field(default_factory=DescriberConfig)

    @property
    def prompt_hash(self) -> str:
        settings = {
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
            "system_as_user": self.config.system_as_user,
            "detail": self.config.image_detail,
        }
        return self.prompt.hash(self.client.model, settings)

    def describe(self, marks: Mapping[str, Any], image: bytes, mime: str | None = None) -> DescriberResult:
        """Names and descriptions for every tag of `marks`, whose marked image is `image`."""
        tags = sorted(marks.get("marks") or [], key=lambda m: m["id"])
        labels = [str(m.get("label", m["id"])) for m in tags]
        prompt_hash = self.prompt_hash
        base = _result_base(marks, self.client.model, prompt_hash)
        if not tags:
            return DescriberResult(**base, tags=(), attempts=0)
        messages = self._first_messages(labels, image, mime)
        base_key = self._base_key(marks, labels, prompt_hash)
        answers: list[str] = []
        problems: list[str] = []
        for attempt in range(self.config.max_attempts):
            key = hashlib.sha256(canonical_json({"base": base_key, "answers": answers})).hexdigest()
            answer = self.client.complete(
                messages,
                temperature=self.config.temperature,
                max_tokens=self.config.tokens_for(len(tags)),
                cache_key=key,
            )
            answers.append(answer)
            parsed, problems = parse_answer(answer, labels)
            if not problems:
                named = tuple(
                    TagName(m["id"], label, line.name, SOURCE_DESCRIBER, description=line.description)
                    for m, label, line in zip(tags, labels, parsed, strict=False)
                )
                return DescriberResult(**base, tags=named, attempts=attempt + 1, answers=tuple(answers))
            log.info("%s: describer answer %d malformed: %s", base["image"], attempt + 1, "; ".join(problems))
            messages = [
                *messages,
                {"role": "assistant", "content": answer},
                {"role": "user", "content": feedback_message(problems, labels)},
            ]
        error = f"no valid answer after {len(answers)} attempts; last problems: {'; '.join(problems)}"
        log.warning("%s: %s", base["image"], error)
        unnamed = tuple(TagName(m["id"], label, None, None) for m, label in zip(tags, labels, strict=False))
        return DescriberResult(**base, tags=unnamed, attempts=len(answers), answers=tuple(answers), error=error)

    def describe_many(self, items: Iterable[tuple[Mapping[str, Any], bytes]]) -> list[DescriberResult]:
        """`describe` for (marks, image bytes) pairs, in order, as many at a time as the
        client allows in flight."""
        items = list(items)
        if not items:
            return []
        with ThreadPoolExecutor(
            max_workers=min(self.client.max_concurrency, len(items)), thread_name_prefix="describer"
        ) as pool:
            return list(pool.map(lambda item: self.describe(*item), items))

    # ------------------------------------------------------------------ internals

    def _first_messages(self, labels: Sequence[str], image: bytes, mime: str | None) -> list[dict[str, Any]]:
        request = (
            f"This image carries {len(labels)} tag{'s' if len(labels) > 1 else ''}: "
            f"{', '.join(labels)}. Answer with exactly {len(labels)} "
            f"line{'s' if len(labels) > 1 else ''}, one per tag in this order, each "
            "'N. name: short description'."
        )
        system = self.prompt.system_message()
        user_text = f"{system}\n\n{request}" if self.config.system_as_user else request
        user = {
            "role": "user",
            "content": [text_content(user_text), image_content(image, mime, detail=self.config.image_detail)],
        }
        if self.config.system_as_user:
            return [user]
        return [{"role": "system", "content": system}, user]

    def _base_key(self, marks: Mapping[str, Any], labels: Sequence[str], prompt_hash: str) -> str:
        sha = str(marks.get("sha256") or "")
        if not sha:
            raise ValueError(f"marks JSON for {marks.get('image')!r} has no sha256 (needed for the cache key)")
        fingerprint = {
            "labels": list(labels),
            "segmenter": marks.get("segmenter"),
            "style": marks.get("style"),
            "size": [marks.get("width"), marks.get("height")],
        }
        return hashlib.sha256(
            canonical_json({"kind": "som-describer", "image_sha256": sha, "marks": fingerprint, "prompt": prompt_hash})
        ).hexdigest()


def feedback_message(problems: Sequence[str], labels: Sequence[str]) -> str:
    """The follow-up user message after a malformed answer."""
    listed = "\n".join(f"- {p}" for p in problems)
    return (
        f"That answer cannot be used:\n{listed}\n"
        f"Please answer again with exactly {len(labels)} lines, one for each tag "
        f"{_span(labels)} in ascending order, each 'N. name: short description', and nothing else."
    )


def _result_base(marks: Mapping[str, Any], model: str, prompt_hash: str) -> dict[str, Any]:
    return {
        "image": str(marks.get("image", "")),
        "sha256": str(marks.get("sha256", "")),
        "model": model,
        "prompt_hash": prompt_hash,
    }
