"""`som data check`: what is wrong with a LLaVA JSON file before a training run finds out.

The file is streamed (`iter_json_array`), so memory holds one record, an 8-byte hash per id
(duplicate detection), a bounded cache of image lookups, a histogram of token lengths and up to
`max_examples` examples per problem kind, whatever the file's size.

Problem kinds (each record is counted once per kind, with its reasons joined):
- malformed: the LLaVA shape is wrong (`record_problems`), or `image` is not a path / paths.
- duplicate_id: an id already seen earlier in the file (the first occurrence is not flagged).
- empty_answer: a gpt turn whose value is blank.
- image_token: `<image>` missing from an image record's first human turn, present in a
  text-only record, or appearing more often than the record has images.
- missing_image: `exists(location)` is false; location is image_root joined with a relative
  path, or the path / URL itself.
- malformed also covers a relative image path that leaves the image root ('..').
- unreadable: the file stops being a JSON array or UTF-8 text (kept as `fatal`, with the
  element index, byte offset and line; counts cover what was read).

Token lengths (with a tokenizer) are statistics, not problems: whether an over-long record is a
fault depends on the training run's `model_max_length`, so they do not change `ok`.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from som import storage
from som.data.json_stream import JsonArrayError, iter_json_array
from som.data.llava import IMAGE_TOKEN, checked_images, id_digest, record_id, record_problems, under_root

log = logging.getLogger(__name__)

KINDS = ("malformed", "duplicate_id", "empty_answer", "image_token", "missing_image")
DEFAULT_MAX_LENGTH = 2048
EXISTS_CACHE = 65536  # image lookups remembered: records of one image usually sit together

_EMPTY_TURN = re.compile(r"turn (\d+) is empty")


@dataclass(frozen=True)
class Example:
    """One flagged record: its position in the array, its id (None if it has none) and why."""

    index: int
    record_id: str | None
    reason: str

    def label(self) -> str:
        return f"{self.record_id}" if self.record_id is not None else f"element {self.index}"


@dataclass
class ProblemCount:
    """How many records have one kind of problem, and the first few of them."""

    count: int = 0
    examples: list[Example] = field(default_factory=list)


@dataclass(frozen=True)
class TokenStats:
    """Token lengths of the records' concatenated turn texts; percentiles are nearest-rank."""

    records: int
    min: int
    mean: float
    p50: int
    p95: int
    max: int
    max_length: int
    over_max_length: int
    longest: tuple[Example, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "min": self.min,
            "mean": self.mean,
            "p50": self.p50,
            "p95": self.p95,
            "max": self.max,
            "max_length": self.max_length,
            "over_max_length": self.over_max_length,
            "over_examples": [_example_dict(e) for e in self.longest],
        }


@dataclass
class CheckReport:
    """Everything `check_file` found; `ok` is what the CLI's exit status should follow."""

    url: str
    image_root: str | None = None
    records: int = 0
    images_checked: int = 0
    problems: dict[str, ProblemCount] = field(default_factory=lambda: {k: ProblemCount() for k in KINDS})
    tokens: TokenStats | None = None
    fatal: str | None = None
    max_examples: int = 20

    @property
    def ok(self) -> bool:
        return self.fatal is None and not any(p.count for p in self.problems.values())

    def count(self, kind: str) -> int:
        return self.problems[kind].count

    def ids(self, kind: str) -> list[str | None]:
        """Ids of the example records of one kind (at most `max_examples`)."""
        return [e.record_id for e in self.problems[kind].examples]

    def add(self, kind: str, example: Example) -> None:
        problem = self.problems[kind]
        problem.count += 1
        if len(problem.examples) < self.max_examples:
            problem.examples.append(example)

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "image_root": self.image_root,
            "ok": self.ok,
            "records": self.records,
            "images_checked": self.images_checked,
            "fatal": self.fatal,
            "problems": {
                kind: {"count": p.count, "examples": [_example_dict(e) for e in p.examples]}
                for kind, p in self.problems.items()
            },
            "tokens": self.tokens.as_dict() if self.tokens else None,
        }

    def lines(self) -> list[str]:
        """A human summary: totals, then each problem kind with its examples."""
        out = [f"{self.url}: {self.records} records, {self.images_checked} image lookups"]
        if self.fatal:
            out.append(f"  UNREADABLE: {self.fatal} (counts cover the records before it)")
        for kind, problem in self.problems.items():
            out.append(f"  {kind}: {problem.count}")
            out.extend(f"    - {e.label()}: {e.reason}" for e in problem.examples)
            if problem.count > len(problem.examples):
                out.append(f"    ... and {problem.count - len(problem.examples)} more")
        if self.tokens:
            t = self.tokens
            out.append(
                f"  tokens over {t.records} records: min {t.min}, mean {t.mean:.1f}, p50 {t.p50}, "
                f"p95 {t.p95}, max {t.max}; {t.over_max_length} over {t.max_length}"
            )
            out.extend(f"    - {e.label()}: {e.reason}" for e in t.longest)
        out.append("OK" if self.ok else "PROBLEMS FOUND")
        return out


def _example_dict(example: Example) -> dict[str, Any]:
    return {"index": example.index, "id": example.record_id, "reason": example.reason}


# ----------------------------------------------------------------------------- checks


def load_tokenizer(name_or_folder: str) -> Any:
    """A Hugging Face tokenizer (hub id or local folder); imported here so checks without one
    do not pay for transformers."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_folder)


def token_length(tokenizer: Any, text: str) -> int:
    """Token count of `text` with `encode` (HF and `tokenizers` alike) or a call's input_ids."""
    if hasattr(tokenizer, "encode"):
        encoded = tokenizer.encode(text)
        ids = getattr(encoded, "ids", encoded)  # tokenizers.Tokenizer returns an Encoding
    else:
        ids = tokenizer(text)["input_ids"]
    return len(ids)


def record_text(record: Mapping[str, Any]) -> str:
    """The turn values joined by newlines: what the model reads, without a chat template."""
    turns = record.get("conversations")
    if not isinstance(turns, list):
        return ""
    return "\n".join(t["value"] for t in turns if isinstance(t, dict) and isinstance(t.get("value"), str))


def image_token_problems(record: Mapping[str, Any], images: list[str]) -> list[str]:
    """Finer reasons than `record_problems` gives for `<image>` misuse."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return []  # no conversation at all is reported as malformed
    values = [t["value"] for t in turns if isinstance(t, dict) and isinstance(t.get("value"), str)]
    tokens = sum(v.count(IMAGE_TOKEN) for v in values)
    if not images:
        return [f"{IMAGE_TOKEN} appears {tokens}x in a record without an image"] if tokens else []
    if tokens == 0:
        return [f"no {IMAGE_TOKEN} in an image record"]
    if tokens > len(images):
        return [f"{IMAGE_TOKEN} appears {tokens}x for {len(images)} image(s)"]
    first = turns[0].get("value") if isinstance(turns[0], dict) else None
    if len(images) == 1 and not (isinstance(first, str) and first.startswith(IMAGE_TOKEN)):
        return [f"{IMAGE_TOKEN} does not open the first human turn"]
    if tokens < len(images):
        return [f"{IMAGE_TOKEN} appears {tokens}x for {len(images)} images"]
    return []


def check_file(
    url: str,
    *,
    image_root: str | None = None,
    exists: Callable[[str], bool] | None = None,
    tokenizer: Any = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    max_examples: int = 20,
) -> CheckReport:
    """Stream a LLaVA JSON array at `url` (any storage URL) and report every problem kind.

    `exists(location)` answers whether an image is there (default: som.storage.exists, so
    object storage works); `tokenizer` (e.g. from `load_tokenizer`) adds token statistics."""
    report = CheckReport(url=url, image_root=image_root, max_examples=max_examples)
    lookup = _CachedExists(exists or storage.exists)
    seen: set[bytes] = set()
    lengths: Counter[int] = Counter()
    over: list[Example] = []
    fs, path = storage.resolve(url)
    with fs.open(path, "rb") as stream:
        try:
            for index, record in enumerate(iter_json_array(stream)):
                report.records += 1
                length = _check_record(report, index, record, image_root, lookup, seen, tokenizer)
                if length is not None:
                    lengths[length] += 1
                    if length > max_length and len(over) < max_examples:
                        over.append(Example(index, record_id(record), f"{length} tokens"))
        except JsonArrayError as exc:
            report.fatal = str(exc)
            log.warning("%s is not a readable JSON array: %s", url, exc)
    report.images_checked = lookup.calls
    if tokenizer is not None and lengths:
        report.tokens = _token_stats(lengths, max_length, tuple(over))
    log.info("checked %s: %d records, ok=%s", url, report.records, report.ok)
    return report


def _check_record(
    report: CheckReport,
    index: int,
    record: Any,
    image_root: str | None,
    lookup: _CachedExists,
    seen: set[bytes],
    tokenizer: Any,
) -> int | None:
    """Add one record's problems to the report; its token length (None without a tokenizer)."""
    found_id = record_id(record)
    found: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for problem in record_problems(record):
        empty = _EMPTY_TURN.fullmatch(problem)
        if IMAGE_TOKEN in problem:
            continue  # replaced by image_token_problems' finer reasons
        elif empty and int(empty.group(1)) % 2:
            found["empty_answer"].append(problem)
        else:
            found["malformed"].append(problem)
    if not isinstance(record, dict):
        _add_all(report, index, found_id, found)
        return None
    images = checked_images(record)
    if images is None:
        found["malformed"].append("image is not a path or a list of paths")
        images = []
    found["image_token"] = image_token_problems(record, images)
    if found_id is not None:
        digest = id_digest(found_id)
        if digest in seen:
            found["duplicate_id"].append(f"id {found_id!r} seen before")
        seen.add(digest)
    for image in images:
        location = under_root(image, image_root)
        if location is None:
            found["malformed"].append(f"image path {image!r} leaves the image root {image_root}")
        elif not lookup(location):
            found["missing_image"].append(f"no image at {location}")
    _add_all(report, index, found_id, found)
    return token_length(tokenizer, record_text(record)) if tokenizer is not None else None


def _add_all(report: CheckReport, index: int, record_id: str | None, found: Mapping[str, list[str]]) -> None:
    for kind, reasons in found.items():
        if reasons:
            report.add(kind, Example(index, record_id, "; ".join(reasons)))


def _token_stats(lengths: Counter[int], max_length: int, over: tuple[Example, ...]) -> TokenStats:
    total = sum(lengths.values())
    ordered = sorted(lengths.items())
    return TokenStats(
        records=total,
        min=ordered[0][0],
        mean=sum(length * n for length, n in ordered) / total,
        p50=_nearest_rank(ordered, total, 0.50),
        p95=_nearest_rank(ordered, total, 0.95),
        max=ordered[-1][0],
        max_length=max_length,
        over_max_length=sum(n for length, n in ordered if length > max_length),
        longest=over,
    )


def _nearest_rank(ordered: Iterable[tuple[int, int]], total: int, fraction: float) -> int:
    """The smallest length with at least `fraction` of the records at or below it."""
    rank, running = max(1, math.ceil(fraction * total)), 0
    for length, n in ordered:
        running += n
        if running >= rank:
            return length
    raise ValueError("empty histogram")


class _CachedExists:
    """`exists` with a bounded LRU cache: many records share an image, one lookup each."""

    def __init__(self, exists: Callable[[str], bool], size: int = EXISTS_CACHE) -> None:
        self.exists, self.size, self.calls = exists, size, 0
        self.cache: OrderedDict[str, bool] = OrderedDict()

    def __call__(self, location: str) -> bool:
        if location in self.cache:
            self.cache.move_to_end(location)
            return self.cache[location]
        self.calls += 1
        found = bool(self.exists(location))
        self.cache[location] = found
        if len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return found
