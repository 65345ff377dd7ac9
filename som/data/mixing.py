"""Mix a base LLaVA instruction file with SoM records: seeded shuffle, unique ids, images checked.

Inputs are JSON arrays of LLaVA records (e.g. llava_v1_5_mix665k.json, ~1 GB). They are read
as streams, one record at a time (`som.data.json_stream`), and never held whole.

Shuffle (bucketed, two passes): pass 1 writes each record as one line (its source text with
the line breaks between tokens removed) to one of B temporary bucket files on local disk,
chosen uniformly at random; pass 2 loads one bucket at a time, shuffles it in memory and
appends it to the output. Uniform bucket choice plus a uniform shuffle inside each bucket
gives a uniform random permutation; both RNGs derive from the seed, so the output is the
same for the same inputs and seed.

Memory bound: peak ≈ one bucket's lines (B is chosen so a bucket holds about `bucket_bytes`
of input, default 32 MiB, plus ~100 bytes of list/bytes overhead per record) + 8 bytes per
record for the id hashes + the reader's buffer (one chunk plus the record being parsed, at
most `max_record_chars`) + one batch of records awaiting their image checks. Measured
(tests/instructions/test_mixing.py, tracemalloc): a 50k-record, 12 MiB base plus 2k SoM
records with 1 MiB buckets peaks at ~5.3 MiB, where json.load of the base alone takes ~5x
the file size. Disk: about the size of all inputs, under the temporary directory.

Ids: each record's id is hashed (64-bit BLAKE2b) into a flat array; duplicated hashes are
resolved exactly (the ids are re-read from the buckets and compared as strings). The first
occurrence, in input order, keeps its id; a later one is renamed `<prefix><id>` when its
source declares a prefix, otherwise the mix fails before writing anything.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import numpy as np

from som import storage
from som.data.json_stream import JsonArrayError, iter_json_array
from som.data.llava import id_digest, record_images, under_root
from som.data.seeding import seeded_random

log = logging.getLogger(__name__)


class MixError(ValueError):
    """The inputs cannot be mixed as asked (malformed, id collisions, too many missing images)."""


class _HashingReader:
    """A binary stream that hashes what is read through it (the card records input hashes)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.sha256, self.bytes_read = raw, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha256.update(data)
        self.bytes_read += len(data)
        return data


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class MixSource:
    """One input file. kind: "base" or a SoM kind ("som-listing", "som-qa"), for the card.
    id_prefix: renames this source's records whose ids collide with an earlier record."""

    url: str
    kind: str = "som"
    name: str | None = None
    id_prefix: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class MixConfig:
    """Arguments:
    seed: shuffle seed.
    image_root: record image paths are relative to it; None: they are full URLs / paths.
    max_missing: more records with a missing image than this fails the mix (nothing written).
    drop_missing: leave records whose image is missing out of the output.
    bucket_bytes: target input bytes per shuffle bucket (the memory bound, see module doc).
    check_workers: threads calling `exists` (object storage answers one HEAD at a time).
    keep_missing: how many missing (id, path) examples the result keeps for the report.
    tmp_dir: where the bucket files go (default: the system's temporary directory).
    """

    seed: int = 0
    image_root: str | None = None
    max_missing: int = 0
    drop_missing: bool = True
    bucket_bytes: int = 32 << 20
    check_workers: int = 1
    keep_missing: int = 100
    tmp_dir: str | None = None


@dataclass
class SourceCounts:
    """What happened to one input's records."""

    name: str
    kind: str
    url: str
    sha256: str = ""
    read: int = 0
    written: int = 0
    with_image: int = 0
    text_only: int = 0
    multi_turn: int = 0
    missing_image: int = 0
    renamed: int = 0


@dataclass(frozen=True)
class MixResult:
    """What a mix wrote: per-source counts, missing images; the card and card.json from it."""

    output: str
    seed: int
    image_root: str | None
    buckets: int
    sources: tuple[SourceCounts, ...]
    missing_count: int
    missing_examples: tuple[tuple[str, str], ...] = field(default=())

    @property
    def written(self) -> int:
        return sum(s.written for s in self.sources)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["written"] = self.written
        data["missing_examples"] = [list(e) for e in self.missing_examples]
        return data

    def card_markdown(self) -> str:
        """The dataset card: sources with hashes, counts per source and kind, seed, missing."""
        lines = [
            "# Instruction mix",
            "",
            f"- output: `{self.output}`",
            f"- records: {self.written}",
            f"- seed: {self.seed} (bucketed shuffle, {self.buckets} buckets)",
            f"- image root: `{self.image_root}`" if self.image_root else "- image root: none (full URLs)",
            f"- records with a missing image: {self.missing_count}",
            "",
            "## Sources",
            "",
            "| source | kind | read | written | with image | text only | multi-turn "
            "| missing image | renamed ids | sha256 |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for s in self.sources:
            lines.append(
                f"| {s.name} | {s.kind} | {s.read} | {s.written} | {s.with_image} | {s.text_only} "
                f"| {s.multi_turn} | {s.missing_image} | {s.renamed} | `{s.sha256}` |"
            )
        by_kind: Counter[str] = Counter()
        for s in self.sources:
            by_kind[s.kind] += s.written
        lines += ["", "## Records by kind", "", "| kind | written | share |", "|---|---:|---:|"]
        for kind, count in sorted(by_kind.items()):
            lines.append(f"| {kind} | {count} | {count / max(1, self.written):.1%} |")
        if self.missing_examples:
            lines += ["", "## Missing images (first examples)", ""]
            lines += [f"- `{rid}`: `{path}`" for rid, path in self.missing_examples]
        return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- mixing


def mix(
    sources: Sequence[MixSource],
    output: str,
    config: MixConfig = MixConfig(),
    *,
    exists: Callable[[str], bool] | None = None,
) -> MixResult:
    """Write the shuffled union of `sources` (earlier ones keep colliding ids) to `output`.

    `exists(location)` answers whether an image is there; location is image_root joined with
    the record's path (default: som.storage.exists, so object storage works)."""
    if not sources:
        raise MixError("nothing to mix: no sources")
    check = exists or storage.exists
    total_bytes = sum(_size(s.url) for s in sources)
    n_buckets = max(1, min(4096, math.ceil(total_bytes / max(1, config.bucket_bytes))))
    counts = [SourceCounts(s.label, s.kind, s.url) for s in sources]
    with tempfile.TemporaryDirectory(prefix="som-mix-", dir=config.tmp_dir) as tmp:
        paths = [os.path.join(tmp, f"bucket-{b:04d}.jsonl") for b in range(n_buckets)]
        pass1 = _Pass1(config, check, counts, paths)
        hashes, starts = pass1.run(sources)
        if pass1.missing_count > config.max_missing:
            examples = "; ".join(f"{i}: {p}" for i, p in pass1.missing[:10])
            raise MixError(
                f"{pass1.missing_count} records reference missing images (allowed: "
                f"{config.max_missing}); e.g. {examples}"
            )
        renames = _resolve_ids(hashes, starts, sources, paths, counts)
        _write_shuffled(paths, output, renames, starts, counts, config.seed)
    result = MixResult(
        output,
        config.seed,
        config.image_root,
        n_buckets,
        tuple(counts),
        pass1.missing_count,
        tuple(pass1.missing),
    )
    log.info("mixed %d records from %d sources into %s", result.written, len(sources), output)
    return result


def _size(url: str) -> int:
    fs, path = storage.resolve(url)
    try:
        return int(fs.size(path) or 0)
    except FileNotFoundError:
        raise MixError(f"input {url} does not exist") from None


def _id_hash(record_id: str) -> int:
    return int.from_bytes(id_digest(record_id), "big")


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_LINE_BREAKS = re.compile(r"[\r\n][ \t\r\n]*")


def _dumps(record: Any) -> bytes:
    # Compact JSON has no raw newline (strings escape it), so one record is one line.
    return _ENCODER.encode(record).encode("utf-8")


def _one_line(text: str) -> bytes:
    """A record's source text on one line, unchanged otherwise (cheaper than re-encoding).

    JSON strings cannot hold a raw line break, so every break in the text is whitespace
    between tokens, where it (and the indentation after it) can go."""
    return _LINE_BREAKS.sub("", text).encode("utf-8")


_OUTSIDE = "(leaves the image root: '..' is refused)"


class _Pass1:
    """Stream every source: validate, count, check images, hash ids, scatter to buckets."""

    BATCH = 512

    def __init__(
        self, config: MixConfig, exists: Callable[[str], bool], counts: list[SourceCounts], paths: list[str]
    ) -> None:
        self.config, self.exists, self.counts, self.paths = config, exists, counts, paths
        self.rng = seeded_random(config.seed, "mix", "buckets")
        self.hashes = array("Q")
        self.missing: list[tuple[str, str]] = []
        self.missing_count = 0
        self.pool = ThreadPoolExecutor(config.check_workers) if config.check_workers > 1 else None

    def run(self, sources: Sequence[MixSource]) -> tuple[np.ndarray, list[int]]:
        starts = []
        files = [open(p, "wb") for p in self.paths]
        try:
            for number, source in enumerate(sources):
                starts.append(len(self.hashes))
                self._read(number, source, files)
        finally:
            for f in files:
                f.close()
            if self.pool:
                self.pool.shutdown()
        return np.frombuffer(self.hashes, dtype=np.uint64), starts

    def _read(self, number: int, source: MixSource, files: Sequence[IO[bytes]]) -> None:
        counts = self.counts[number]
        fs, path = storage.resolve(source.url)
        batch: list[tuple[dict[str, Any], str]] = []
        with fs.open(path, "rb") as raw:
            reader = _HashingReader(raw)
            try:
                for index, (record, text) in enumerate(iter_json_array(reader, with_text=True)):
                    if not isinstance(record, dict) or not isinstance(record.get("id"), (str, int)):
                        raise MixError(f"element {index} has no string or integer 'id'")
                    batch.append((record, text))
                    if len(batch) >= self.BATCH:
                        self._flush(batch, counts, files)
            except (JsonArrayError, MixError) as exc:
                raise MixError(f"{source.url}: {exc}") from None
            self._flush(batch, counts, files)
        counts.sha256 = reader.sha256.hexdigest()

    def _locate(self, image: str) -> str:
        """Where an image is (`under_root`); a path leaving the root gets a location that
        says so, and `_flush` counts it as missing without a lookup."""
        location = under_root(image, self.config.image_root)
        return location if location is not None else f"{image} {_OUTSIDE}"

    def _flush(self, batch: list[tuple[dict[str, Any], str]], counts: SourceCounts, files: Sequence[IO[bytes]]) -> None:
        locations = sorted({self._locate(i) for r, _ in batch for i in record_images(r)})
        outside = [loc for loc in locations if loc.endswith(_OUTSIDE)]
        inside = [loc for loc in locations if not loc.endswith(_OUTSIDE)]
        found = dict(zip(inside, (self.pool.map if self.pool else map)(self.exists, inside), strict=False))
        found.update(dict.fromkeys(outside, False))
        for record, text in batch:
            counts.read += 1
            images = record_images(record)
            counts.with_image += bool(images)
            counts.text_only += not images
            turns = record.get("conversations") or []
            counts.multi_turn += sum(isinstance(t, dict) and t.get("from") == "human" for t in turns) > 1
            absent = [i for i in images if not found[self._locate(i)]]
            index = len(self.hashes)
            self.hashes.append(_id_hash(str(record["id"])))
            if absent:
                counts.missing_image += 1
                self.missing_count += 1
                if len(self.missing) < self.config.keep_missing:
                    self.missing.append((str(record["id"]), self._locate(absent[0])))
                if self.config.drop_missing:
                    continue
            bucket = self.rng.randrange(len(files))
            files[bucket].write(b"%d\t" % index + _one_line(text) + b"\n")
        batch.clear()


def _source_of(index: int, starts: list[int]) -> int:
    return bisect.bisect_right(starts, index) - 1


def _resolve_ids(
    hashes: np.ndarray,
    starts: list[int],
    sources: Sequence[MixSource],
    paths: list[str],
    counts: list[SourceCounts],
) -> dict[int, str]:
    """New ids for later duplicates (by global record index); MixError when one cannot be renamed."""
    ordered = np.sort(hashes)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if repeated.size == 0:
        return {}
    suspects = set(np.flatnonzero(np.isin(hashes, repeated)).tolist())
    ids: dict[int, str] = {}
    for path in paths:  # the suspects' exact ids; dropped records are in no bucket and clash with none
        with open(path, "rb") as f:
            for line in f:
                index = int(line.split(b"\t", 1)[0])
                if index in suspects:
                    ids[index] = str(json.loads(line.split(b"\t", 1)[1])["id"])
    groups: dict[str, list[int]] = {}
    for index in sorted(ids):
        groups.setdefault(ids[index], []).append(index)
    renames, unresolved = {}, []
    for record_id, indices in groups.items():
        for index in indices[1:]:
            number = _source_of(index, starts)
            prefix = sources[number].id_prefix
            if not prefix:
                unresolved.append(f"{record_id!r} in {sources[number].label}")
                continue
            renames[index] = f"{prefix}{record_id}"
            counts[number].renamed += 1
    if unresolved:
        raise MixError(
            f"{len(unresolved)} duplicate ids (give the source an id prefix to rename them): "
            + ", ".join(unresolved[:10])
        )
    # A new id must differ from every input id (by hash: a false alarm has odds ~2^-64 per
    # pair) and from the other new ids (exactly).
    new_ids = list(renames.values())
    taken = np.isin(np.array([_id_hash(i) for i in new_ids], dtype=np.uint64), hashes)
    repeats = Counter(new_ids)
    bad = [i for i, hit in zip(new_ids, taken, strict=False) if hit or repeats[i] > 1]
    if bad:
        raise MixError(f"renamed ids still collide: {', '.join(sorted(set(bad))[:10])}")
    return renames


@contextlib.contextmanager
def _open_output(url: str) -> Iterator[IO[bytes]]:
    """Local: temp sibling then rename. Object storage: a multipart upload that appears on close."""
    fs, path = storage.resolve(url)
    if storage.protocol_of(url) in storage.LOCAL_PROTOCOLS:
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    else:
        with fs.open(path, "wb") as f:
            yield f


def _write_shuffled(
    paths: list[str],
    output: str,
    renames: dict[int, str],
    starts: list[int],
    counts: list[SourceCounts],
    seed: int,
) -> None:
    """Pass 2: each bucket loaded, shuffled and appended, as one JSON array."""
    separator = b"[\n"
    with _open_output(output) as out:
        for number, path in enumerate(paths):
            with open(path, "rb") as f:
                lines = f.readlines()
            seeded_random(seed, "mix", f"bucket-{number}").shuffle(lines)
            for line in lines:
                head, text = line.rstrip(b"\n").split(b"\t", 1)
                index = int(head)
                if index in renames:
                    record = json.loads(text)
                    record["id"] = renames[index]
                    text = _dumps(record)
                out.write(separator + text)
                separator = b",\n"
                counts[_source_of(index, starts)].written += 1
            del lines
        out.write(b"[]\n" if separator == b"[\n" else b"\n]\n")
