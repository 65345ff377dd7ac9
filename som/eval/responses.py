"""Model answers of an evaluation run, one JSONL file per shard, safe to resume.

Layout (DESIGN.md): ``<run_dir>/eval/<benchmark>/<variant>/responses-<shard>.jsonl``, one line
per answered question::

    {"id": "...", "answer": "...", "model": "...", "variant": "plain", "prompt_hash": "...",
     "time": "2026-11-21T10:00:00+00:00",
     "generation": {"input_format": 2, "max_new_tokens": 128, "prompt_profile": "auto"}}

Why whole-file rewrites: object storage has no append, and numbered part files would multiply
the objects a reader lists. A shard file is owned by the one array task answering that shard,
so that task keeps the file's lines in memory and, after each batch, writes the whole file
again with `som.storage.write_bytes_atomic` (a temp file + rename locally, one PUT on S3).
A crash therefore leaves the previous batch's file or the new one, never a torn line, and an
answer is either in the file or re-asked on the next run: nothing is lost or duplicated. The
cost, rewriting a file of at most a few hundred kB once per batch, is small beside generating
the batch. A file never holds two lines for one id: a new answer to an id replaces the old line.

Readers still tolerate a torn last line (a file copied by hand, or written by another tool):
it is dropped with a warning, so that question is answered again. A malformed line anywhere
else is an error naming the file and line. When one id is in two shard files (the shard count
changed between runs and the question was re-asked), the newest record wins, ties going to the
later line in shard order, so every reader sees the same answer.

An answer counts as already given only when it was made by the same model for the same prompt
(`prompt_hash`) with the same generation settings (`generation`: prompt profile, token limit
and the version of somflow's input format): changing a benchmark's prompt, the tagging
options, the profile or the limit re-asks its questions, and so does an answer from before
the settings were recorded. A run folder that already holds another model's answers is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from som import storage

log = logging.getLogger(__name__)

SHARD_FILE = re.compile(r"responses-(\d+)\.jsonl")
_FIELDS = ("id", "answer", "model", "variant", "prompt_hash", "time")


class ResponsesError(ValueError):
    """A responses file that cannot be used as it is; the message names the file and line."""


@dataclass(frozen=True)
class Response:
    """One answered question."""

    id: str
    answer: str
    model: str
    variant: str
    prompt_hash: str
    time: str
    generation: dict[str, Any] = field(default_factory=dict)
    """What besides the prompt decided the answer (`som.eval.runner.generation_settings`)."""

    def to_line(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)


def now() -> str:
    """UTC timestamp for a record (ISO 8601, seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def prompt_hash(prompt: str, image: str | None, options: Mapping[str, Any] | None = None) -> str:
    """Short, stable hash of what the model was shown: prompt text, image reference and any
    options that change the image (tagging). Equal hashes mean an old answer still applies."""
    payload = json.dumps([prompt, image, dict(options or {})], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def variant_dir(eval_dir: str, benchmark: str, variant: str) -> str:
    """``<eval_dir>/<benchmark>/<variant>``: the folder of one variant's shard files."""
    return storage.join(eval_dir, benchmark, variant)


def shard_url(folder: str, shard: int) -> str:
    """The responses file of `shard` in a variant folder."""
    if shard < 0:
        raise ValueError(f"shard must be >= 0, got {shard}")
    return storage.join(folder, f"responses-{shard:05d}.jsonl")


# ----------------------------------------------------------------------------- reading


def parse_lines(text: str, source: str) -> list[Response]:
    """Records of one responses file; a torn last line is dropped (see module docstring)."""
    lines = text.split("\n")
    torn_tail = not text.endswith("\n")
    records: list[Response] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            record = Response(**{name: data[name] for name in _FIELDS}, generation=data.get("generation") or {})
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            if torn_tail and number == len(lines):
                log.warning("%s: dropping a torn last line (its question is asked again)", source)
                continue
            raise ResponsesError(
                f"{source}:{number}: not a responses record ({exc}); fix or delete that line and rerun"
            ) from None
        if not isinstance(record.id, str) or not isinstance(record.answer, str):
            raise ResponsesError(f"{source}:{number}: 'id' and 'answer' must be strings")
        records.append(record)
    return records


def read_shard(url: str) -> list[Response]:
    """One shard file's records in file order (empty when it does not exist yet)."""
    try:
        data = storage.read_bytes(url)
    except FileNotFoundError:
        return []
    return parse_lines(data.decode("utf-8"), url)


def shard_files(folder: str) -> list[str]:
    """Every ``responses-<n>.jsonl`` directly in `folder`, in shard order."""
    found = storage.list_images(folder, extensions=("jsonl",))
    return [
        url
        for url in found
        if "/" not in url[len(folder.rstrip("/")) + 1 :] and SHARD_FILE.fullmatch(url.rsplit("/", 1)[-1])
    ]


def read_responses(folder: str) -> dict[str, Response]:
    """All shards of a variant merged: id -> record (the newest wins, see module docstring)."""
    merged: dict[str, Response] = {}
    for url in shard_files(folder):
        for record in read_shard(url):
            kept = merged.get(record.id)
            if kept is None or record.time >= kept.time:  # ISO 8601 UTC strings sort by time
                merged[record.id] = record
    return merged


def answers(folder: str) -> dict[str, str]:
    """id -> answer text, what a benchmark's `score` takes."""
    return {id_: record.answer for id_, record in read_responses(folder).items()}


def answered_ids(folder: str, *, model: str | None = None, prompt_hashes: Mapping[str, str] | None = None) -> set[str]:
    """Ids already answered in `folder`, optionally only by `model` and only where the
    recorded prompt hash equals the expected one in `prompt_hashes` (id -> hash)."""
    found = set()
    for id_, record in read_responses(folder).items():
        if model is not None and record.model != model:
            continue
        if prompt_hashes is not None and prompt_hashes.get(id_) != record.prompt_hash:
            continue
        found.add(id_)
    return found


def check_model(records: Iterable[Response], model: str, folder: str) -> None:
    """Refuse to mix two models' answers in one variant folder (scores would mean nothing)."""
    others = {r.model for r in records} - {model}
    if others:
        raise ResponsesError(
            f"{folder} already holds answers of {sorted(others)}, not {model!r}; "
            "use another run folder for this model, or delete those files"
        )


# ----------------------------------------------------------------------------- writing


class ShardWriter:
    """One shard file, owned by the single task answering that shard.

    `append` rewrites the whole file atomically (module docstring). The file holds one line
    per id: an answer to an id already there (re-asked because its prompt changed) replaces
    that line in place."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._records: dict[str, Response] = {}
        for record in read_shard(url):  # a hand-edited file may repeat an id: keep the last
            self._records[record.id] = record

    @property
    def records(self) -> list[Response]:
        return list(self._records.values())

    def append(self, records: Iterable[Response]) -> int:
        """Write `records` (the last one per id wins); returns how many lines they took."""
        updated = dict(self._records)
        for record in records:
            updated[record.id] = record
        written = len(updated) - len(self._records) + sum(1 for id_, r in self._records.items() if updated[id_] != r)
        if written:
            text = "".join(r.to_line() + "\n" for r in updated.values())
            storage.write_bytes_atomic(self.url, text.encode("utf-8"))
            self._records = updated  # only once the file holds them
        return written
