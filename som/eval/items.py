"""What every benchmark hands the runner: `EvalItem`s, and where their published files live.

Why one item type: the sharded runner (flows/evaluate.py) only needs "an id, a prompt, an
image to read"; everything a benchmark needs to score an answer rides along in `meta`, which
stays JSON-able so items can travel to Slurm tasks and into result files unchanged.

`Source` hides where a benchmark's published files are: a local folder, any som.storage URL
(``s3://…``, ``file://…``, ``memory://…``) or a Hugging Face dataset repo
(``hf://datasets/<owner>/<name>[@revision]``, downloaded once with huggingface_hub's snapshot
download when online). Small metadata files are read through a local copy so the official
file readers (which name file and line in their errors) work unchanged; images are never
copied, items point at them by URL.

Standard library only at import time (som.storage is imported where used), so that
`som eval score --help`, which imports every benchmark, stays instant. Reading an item's
image (plain or Set-of-Mark) is `som.eval.tagging.read_image_bytes`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from som.eval.formats import FormatError

log = logging.getLogger(__name__)

HF_PREFIX = "hf://datasets/"


@dataclass(frozen=True)
class EvalItem:
    """One question of a benchmark.

    Arguments:
    id: unique within the benchmark (the official question_id where there is one).
    prompt: the full text the model gets, instruction suffixes included.
    image: URL or path of the image (som.storage-readable), None for a text-only question.
    meta: whatever scoring needs (label, category, answer, options, ...); JSON-able.
    """

    id: str
    prompt: str
    image: str | None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "image": self.image, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalItem:
        return cls(
            id=str(data["id"]), prompt=str(data["prompt"]), image=data.get("image"), meta=dict(data.get("meta") or {})
        )


def take(items: Sequence[EvalItem], limit: int | None) -> list[EvalItem]:
    """The first `limit` items (all when None); a negative limit is an error."""
    if limit is None:
        return list(items)
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return list(items[:limit])


def check_unique(items: Sequence[EvalItem], where: str) -> None:
    """Refuse repeated ids: answers are keyed by id, a repeat would silently drop one."""
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise FormatError(where, f"item id {item.id!r} appears twice")
        seen.add(item.id)


def answers_for(
    items: Sequence[EvalItem], answers: dict[str, str], *, allow_partial: bool, benchmark: str
) -> dict[str, str]:
    """The answers to these items; unanswered items are an error unless `allow_partial`.

    Answers to ids not among the items (e.g. a run over more items than were loaded) are
    ignored with a log line, never scored."""
    ids = {item.id for item in items}
    strays = [key for key in answers if key not in ids]
    if strays:
        log.warning(
            "%s: ignoring %d answers to ids not among the %d items (e.g. %s)",
            benchmark,
            len(strays),
            len(ids),
            strays[:3],
        )
    missing = [item.id for item in items if item.id not in answers]
    if missing and not allow_partial:
        raise ValueError(
            f"{benchmark}: {len(missing)} of {len(items)} items have no answer "
            f"(e.g. {missing[:3]}); pass allow_partial=True to score the answered ones"
        )
    return {key: value for key, value in answers.items() if key in ids}


def load_answers(url: str) -> dict[str, str]:
    """Answers JSONL: ``question_id`` + ``text`` (LLaVA's answer files) or ``id`` + ``answer``."""
    from som import storage

    answers: dict[str, str] = {}
    text = storage.read_bytes(url).decode("utf-8")
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FormatError(url, f"not valid JSON ({exc.msg})", number) from exc
        key = record.get("question_id", record.get("id")) if isinstance(record, dict) else None
        value = record.get("text", record.get("answer")) if isinstance(record, dict) else None
        if key is None or not isinstance(value, str):
            raise FormatError(url, "expected question_id + text (or id + answer)", number)
        key = str(key)
        if key in answers and answers[key] != value:
            raise FormatError(url, f"second, different answer to {key}", number)
        answers[key] = value
    return answers


# ----------------------------------------------------------------------------- sources


class SourceError(RuntimeError):
    """A benchmark's published files cannot be reached; the message says what to pass instead."""


class Source:
    """A benchmark's published files: a folder or URL prefix, or ``hf://datasets/<repo>``."""

    def __init__(self, location: str | os.PathLike[str]) -> None:
        location = os.fspath(location)
        self.given = location
        if location.startswith(HF_PREFIX):
            location = hf_snapshot(location)
        from som import storage

        self.url = location
        self.local_root: Path | None = (
            Path(storage.resolve(location)[1]) if storage.protocol_of(location) in storage.LOCAL_PROTOCOLS else None
        )
        self._copies: tempfile.TemporaryDirectory[str] | None = None

    def __repr__(self) -> str:
        return f"Source({self.given!r})"

    def url_of(self, *parts: str) -> str:
        """URL of a file under the source (for item images: never copied)."""
        from som import storage

        return storage.join(self.url, *parts)

    def exists(self, *parts: str) -> bool:
        from som import storage

        return storage.exists(self.url_of(*parts))

    def local(self, *parts: str) -> Path:
        """A local path of one (small) file: itself for local sources, else a copy."""
        if self.local_root is not None:
            return self.local_root.joinpath(*parts)
        from som import storage

        target = self._copy_root().joinpath(*parts)
        if not target.exists():
            try:
                data = storage.read_bytes(self.url_of(*parts))
            except FileNotFoundError as exc:
                raise FormatError(self.url_of(*parts), "not found") from exc
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return target

    def local_dir(self, *parts: str, suffixes: tuple[str, ...] = (".txt", ".json", ".jsonl")) -> Path:
        """A local folder holding the files with these suffixes under `parts` (recursively)."""
        if self.local_root is not None:
            return self.local_root.joinpath(*parts)
        for relative in self.files(*parts, suffixes=suffixes):
            self.local(*parts, relative)
        return self._copy_root().joinpath(*parts)

    def files(self, *parts: str, suffixes: tuple[str, ...] | None = None) -> list[str]:
        """Paths (relative to `parts`) of every file below it, sorted; hidden names skipped."""
        from som import storage

        base = self.url_of(*parts)
        fs, root = storage.resolve(base)
        root = root.rstrip("/")
        fs.invalidate_cache(root)
        try:
            found = fs.find(root)
        except FileNotFoundError:
            return []
        out = []
        for path in found:
            if not path.startswith(root + "/"):
                continue
            relative = path[len(root) + 1 :]
            name = relative.rsplit("/", 1)[-1]
            if name.startswith("."):
                continue
            if suffixes is None or name.lower().endswith(suffixes):
                out.append(relative)
        return sorted(out)

    def _copy_root(self) -> Path:
        if self._copies is None:
            self._copies = tempfile.TemporaryDirectory(prefix="somflow-eval-source-")
        return Path(self._copies.name)


def hf_snapshot(location: str) -> str:
    """Local folder of a Hugging Face dataset repo (``hf://datasets/<owner>/<name>[@rev][/sub]``).

    Uses huggingface_hub's snapshot download (cached, so a second run needs no network); any
    failure, including being offline with nothing cached, becomes a SourceError that says how
    to run without the hub."""
    rest = location[len(HF_PREFIX) :]
    parts = rest.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise SourceError(f"{location}: expected hf://datasets/<owner>/<name>[@revision][/subfolder]")
    name, _, revision = parts[1].partition("@")
    repo_id = f"{parts[0]}/{name}"
    subfolder = "/".join(parts[2:])
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise SourceError(
            f"{location}: reading Hugging Face datasets needs huggingface_hub "
            "(pip install huggingface_hub), or pass a folder of the published files"
        ) from exc
    try:
        folder = snapshot_download(repo_id=repo_id, repo_type="dataset", revision=revision or None)
    except Exception as exc:  # noqa: BLE001 - offline, missing repo, auth: all say the same
        reason = " ".join(str(exc).split())
        raise SourceError(
            f"cannot download Hugging Face dataset {repo_id} ({type(exc).__name__}: {reason}). Without "
            "internet access, copy the benchmark's published files to a folder or object storage "
            "and pass that location instead"
        ) from exc
    return str(Path(folder, subfolder)) if subfolder else str(folder)


def with_meta(item: EvalItem, **extra: Any) -> EvalItem:
    """A copy of `item` with keys added to its meta (items are frozen)."""
    return replace(item, meta={**item.meta, **extra})
