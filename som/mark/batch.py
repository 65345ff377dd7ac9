"""`som mark` over files and folders: parallel, resumable, bad files quarantined.

Outputs for `<root>/a/b.jpg` are `<out>/a/b.<format>` and `<out>/a/b.json`, each written
atomically, the JSON last, so a JSON on disk always describes a complete image. A re-run
skips sources whose JSON records the same bytes (sha256), segmenter and style.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from som.images import IMAGE_EXTENSIONS, ImageLoadError, load_image
from som.mark.annotate import ImageFormat, annotate
from som.mark.options import MarkOptions
from som.segment.base import Segmenter

log = logging.getLogger(__name__)

Status = Literal["marked", "skipped", "unchanged", "failed"]


@dataclass(frozen=True)
class MarkJob:
    source: Path
    stem: Path  # output path without extension


@dataclass(frozen=True)
class ImageReport:
    source: str
    status: Status
    marks: int = 0
    reason: str | None = None


@dataclass
class MarkSummary:
    reports: list[ImageReport] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        return sum(r.status == status for r in self.reports)

    @property
    def processed(self) -> int:
        return len(self.reports) - self.count("failed")

    @property
    def marks(self) -> int:
        return sum(r.marks for r in self.reports)

    def line(self) -> str:
        rate = len(self.reports) / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{len(self.reports)} images: {self.count('marked')} marked ({self.marks} marks), "
            f"{self.count('skipped')} skipped, {self.count('unchanged')} unchanged, "
            f"{self.count('failed')} failed in {self.seconds:.1f} s ({rate:.1f} images/s)"
        )


def collect_jobs(inputs: Sequence[str | Path], out_dir: Path, image_format: ImageFormat) -> list[MarkJob]:
    """Expand files and folders (recursively, image extensions only) into output stems.

    Files named explicitly are kept whatever their extension, so a bad one gets reported.
    Two sources that would write the same output (a.png and a.jpg) keep their extension
    in the stem instead.
    """
    pairs: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            pairs.extend((f, f.relative_to(path)) for f in files)
        else:
            pairs.append((path, Path(path.name)))
    taken: dict[Path, int] = {}
    for _, relative in pairs:
        stem = relative.with_suffix("")
        taken[stem] = taken.get(stem, 0) + 1
    jobs = []
    seen: set[Path] = set()
    for source, relative in pairs:
        if source in seen:
            continue
        seen.add(source)
        stem = relative.with_suffix("")
        if taken[stem] > 1:
            stem = relative.with_name(relative.name.replace(".", "_"))
        jobs.append(MarkJob(source, out_dir / stem))
    return jobs


class Marker:
    """Marks one job at a time with a resident segmenter (one per process)."""

    def __init__(
        self, segmenter: Segmenter, options: MarkOptions, image_format: ImageFormat, force: bool
    ) -> None:
        self.segmenter = segmenter
        self.options = options
        self.image_format = image_format
        self.force = force
        self._config = {"segmenter": segmenter.describe(), "style": options.as_metadata()}

    def __call__(self, job: MarkJob) -> ImageReport:
        source = str(job.source)
        try:
            loaded = load_image(job.source)
        except ImageLoadError as exc:
            return ImageReport(source, "failed", reason=exc.reason)
        json_path = job.stem.with_suffix(".json")
        if not self.force and self._up_to_date(json_path, loaded.sha256):
            return ImageReport(source, "unchanged")
        try:
            output = annotate(loaded, self.segmenter, self.options, image_format=self.image_format)
        except LookupError as exc:  # an annotation-backed segmenter without this image
            return ImageReport(source, "failed", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop the batch
            log.exception("marking %s failed", source)
            return ImageReport(source, "failed", reason=f"{type(exc).__name__}: {exc}")
        json_path.parent.mkdir(parents=True, exist_ok=True)
        if output.image_bytes is not None:
            write_atomic(job.stem.with_suffix("." + self.image_format), output.image_bytes)
        write_atomic(json_path, output.metadata_json())
        if output.skipped:
            return ImageReport(source, "skipped", reason=output.skipped)
        return ImageReport(source, "marked", marks=len(output.metadata["marks"]))

    def _up_to_date(self, json_path: Path, sha256: str) -> bool:
        try:
            previous = json.loads(json_path.read_bytes())
        except (OSError, ValueError):
            return False
        return (
            previous.get("sha256") == sha256
            and previous.get("segmenter") == self._config["segmenter"]
            and previous.get("style") == self._config["style"]
        )


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, then rename: readers never see a partial file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


_WORKER_MARKER: Marker | None = None


def _start_worker(marker: Marker) -> None:
    import cv2

    global _WORKER_MARKER
    _WORKER_MARKER = marker
    cv2.setNumThreads(1)  # one process per core already


def _run_in_worker(job: MarkJob) -> ImageReport:
    assert _WORKER_MARKER is not None
    return _WORKER_MARKER(job)


def run_jobs(marker: Marker, jobs: Sequence[MarkJob], workers: int) -> Iterable[ImageReport]:
    """Yield one report per job, from `workers` processes when more than one.

    Workers come from a fork server: forking this process directly would copy whatever
    threads it runs (an s3fs event loop, torch's pools) into children that can deadlock on
    their locks. The marker (segmenter included, e.g. a parsed COCO index) is sent to each
    worker once, at start-up.
    """
    if workers <= 1 or len(jobs) <= 1:
        yield from map(marker, jobs)
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["som.mark.batch"])
    chunk = max(1, min(8, len(jobs) // (workers * 4)))
    with context.Pool(min(workers, len(jobs)), initializer=_start_worker, initargs=(marker,)) as pool:
        yield from pool.imap_unordered(_run_in_worker, jobs, chunksize=chunk)


def mark_paths(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    segmenter: Segmenter,
    options: MarkOptions,
    *,
    image_format: ImageFormat = "jpg",
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
) -> MarkSummary:
    """Mark every image under `inputs` into `out_dir`; failures go to quarantine.jsonl."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = collect_jobs(inputs, out, image_format)
    marker = Marker(segmenter, options, image_format, force)
    summary = MarkSummary()
    started = time.perf_counter()
    with tqdm(total=len(jobs), unit="img", disable=not progress, desc="marking") as bar:
        for report in run_jobs(marker, jobs, workers):
            summary.reports.append(report)
            if report.status == "failed":
                log.warning("quarantined %s: %s", report.source, report.reason)
            bar.update()
    summary.seconds = time.perf_counter() - started
    summary.reports.sort(key=lambda r: r.source)
    write_quarantine(out / "quarantine.jsonl", summary.reports)
    return summary


def write_quarantine(path: Path, reports: Sequence[ImageReport]) -> None:
    """This run's failed sources with reasons (rewritten each run, removed when none)."""
    failed: list[dict[str, Any]] = [
        {"source": r.source, "reason": r.reason} for r in reports if r.status == "failed"
    ]
    if not failed:
        path.unlink(missing_ok=True)
        return
    write_atomic(path, "".join(json.dumps(item) + "\n" for item in failed).encode("utf-8"))
