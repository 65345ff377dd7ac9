"""`som mark` over files and folders: parallel, resumable, bad files quarantined.

Output names (see `collect_jobs`): each source keeps its path relative to the inputs' common
base, so `<root>/a/b.jpg` gives `<out>/a/b.<format>` and `<out>/a/b.json`, each written
atomically, the JSON last, so a JSON on disk always describes a complete image. A re-run
skips sources whose JSON records the same bytes (sha256), segmenter and style. A worker that
dies (e.g. OOM-killed) loses only its images: they are retried once, each alone in a fresh
process, and quarantined if that dies too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import time
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from som.images import DEFAULT_MAX_ASPECT_RATIO, IMAGE_EXTENSIONS, ImageLoadError, load_image
from som.mark.annotate import ImageFormat, annotate
from som.mark.options import MarkOptions
from som.segment.base import Segmenter
from som.segment.flops import throughput_line

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext  # POSIX only

log = logging.getLogger(__name__)

Status = Literal["marked", "skipped", "unchanged", "failed"]


@dataclass(frozen=True)
class MarkJob:
    source: Path
    stem: Path  # output path without extension

    def output(self, extension: str) -> Path:
        """`stem` + "." + extension; appended, not with_suffix: a kept name `a.jpg` has a dot."""
        return self.stem.with_name(f"{self.stem.name}.{extension}")


@dataclass(frozen=True)
class ImageReport:
    source: str
    status: Status
    marks: int = 0
    reason: str | None = None
    lost: bool = False  # its worker process died (twice) while marking it


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
    def lost(self) -> int:
        """Images whose worker died: the run must not look successful."""
        return sum(r.lost for r in self.reports)

    @property
    def marks(self) -> int:
        return sum(r.marks for r in self.reports)

    def line(self) -> str:
        rate = len(self.reports) / self.seconds if self.seconds > 0 else 0.0
        lost = f" ({self.lost} killed their worker)" if self.lost else ""
        return (
            f"{len(self.reports)} images: {self.count('marked')} marked ({self.marks} marks), "
            f"{self.count('skipped')} skipped, {self.count('unchanged')} unchanged, "
            f"{self.count('failed')} failed{lost} in {self.seconds:.1f} s ({rate:.1f} images/s)"
        )


def collect_jobs(inputs: Sequence[str | Path], out_dir: Path, image_format: ImageFormat) -> list[MarkJob]:
    """Expand files and folders (recursively, image extensions only) into unique output stems.

    Why this scheme: outputs must never overwrite each other (the summary would count two
    images for one output and every re-run would mark them again), and must stay the same
    from run to run so re-runs skip them. Each source keeps its path relative to the common
    base of the inputs (a folder input is its own base, a file's base is its folder): one
    folder `photos/` gives `OUT/a/b.jpg` for `photos/a/b.jpg`; one file gives `OUT/<name>`;
    `dupA/x.jpg dupB/x.jpg` or folders `r1/ r2/` give `OUT/dupA/x.jpg`, `OUT/r1/...`.
    The extension is dropped (`x.jpg` -> `x.<format>` + `x.json`) unless another source in
    the same folder has the same name without it (`a.jpg`, `a.png`): those keep it
    (`a.jpg.<format>`, `a.png.json`). Any clash left (names equal but for case, or with a
    folder) gets `~<8 hex of the relative path's sha1>` appended. Files named explicitly are
    kept whatever their extension, so a bad one gets reported; files under `out_dir` are
    never picked up from a folder input.
    """
    out_abs = _absolute(out_dir)
    bases: list[Path] = []
    sources: dict[Path, Path] = {}  # absolute -> as given (first spelling wins)
    for item in inputs:
        path = Path(item)
        absolute = _absolute(path)
        if path.is_dir():
            bases.append(absolute)
            for found in sorted(path.rglob("*")):
                found_abs = _absolute(found)
                if (
                    found.is_file()
                    and found.suffix.lower() in IMAGE_EXTENSIONS
                    and not found_abs.is_relative_to(out_abs)
                ):
                    sources.setdefault(found_abs, found)
        else:
            bases.append(absolute.parent)
            sources.setdefault(absolute, path)
    if not sources:
        return []
    base = Path(os.path.commonpath([str(b) for b in bases]))
    relatives = {absolute: absolute.relative_to(base) for absolute in sources}
    preferred = {absolute: rel.with_suffix("") if rel.suffix else rel for absolute, rel in relatives.items()}
    counts: dict[str, int] = {}
    for stem in preferred.values():
        counts[_fold(stem)] = counts.get(_fold(stem), 0) + 1
    stems = {absolute: relatives[absolute] if counts[_fold(stem)] > 1 else stem for absolute, stem in preferred.items()}
    folders = {_fold(parent) for stem in stems.values() for parent in stem.parents}
    used: set[str] = set()
    jobs = []
    for absolute, source in sources.items():
        stem = stems[absolute]
        outputs = (stem.with_name(f"{stem.name}.json"), stem.with_name(f"{stem.name}.{image_format}"))
        if _fold(stem) in used or any(_fold(o) in folders for o in outputs):
            digest = hashlib.sha1(relatives[absolute].as_posix().encode()).hexdigest()[:8]
            stem = stem.with_name(f"{stem.name}~{digest}")
        used.add(_fold(stem))
        jobs.append(MarkJob(source, out_dir / stem))
    return jobs


def _absolute(path: str | Path) -> Path:
    """Absolute and normalised (no `..`), without resolving symlinks: names follow the inputs."""
    return Path(os.path.normpath(os.path.abspath(path)))


def _fold(path: Path) -> str:
    """Comparison key: case-insensitive file systems (macOS, Windows) clash on case too."""
    return path.as_posix().casefold()


class Marker:
    """Marks one job at a time with a resident segmenter (one per process)."""

    def __init__(
        self,
        segmenter: Segmenter,
        options: MarkOptions,
        image_format: ImageFormat,
        force: bool,
        max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
    ) -> None:
        self.segmenter = segmenter
        self.options = options
        self.image_format = image_format
        self.force = force
        self.max_aspect_ratio = max_aspect_ratio
        self._config = {"segmenter": segmenter.describe(), "style": options.as_metadata()}

    def __call__(self, job: MarkJob) -> ImageReport:
        source = str(job.source)
        try:
            loaded = load_image(job.source)
        except ImageLoadError as exc:
            return ImageReport(source, "failed", reason=exc.reason)
        json_path = job.output("json")
        if not self.force and self._up_to_date(json_path, loaded.sha256):
            return ImageReport(source, "unchanged")
        try:
            output = annotate(
                loaded,
                self.segmenter,
                self.options,
                image_format=self.image_format,
                max_aspect_ratio=self.max_aspect_ratio,
            )
        except ImageLoadError as exc:  # refused before resizing: extreme aspect ratio, too big
            return ImageReport(source, "failed", reason=exc.reason)
        except LookupError as exc:  # an annotation-backed segmenter without this image
            return ImageReport(source, "failed", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop the batch
            log.exception("marking %s failed", source)
            return ImageReport(source, "failed", reason=f"{type(exc).__name__}: {exc}")
        json_path.parent.mkdir(parents=True, exist_ok=True)
        if output.image_bytes is not None:
            write_atomic(job.output(self.image_format), output.image_bytes)
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


def run_jobs(marker: Marker, jobs: Sequence[MarkJob], workers: int) -> Iterator[ImageReport]:
    """Yield one report per job, from `workers` processes when more than one.

    Workers come from a fork server: forking this process directly would copy whatever
    threads it runs (an s3fs event loop, torch's pools) into children that can deadlock on
    their locks. The marker (segmenter included, e.g. a parsed COCO index) is sent to each
    worker once, at start-up.

    A worker that dies (an OOM kill) breaks its pool: multiprocessing.Pool would wait forever
    for the lost task, concurrent.futures raises BrokenProcessPool for every job in flight.
    Those jobs (at most 2 x workers, since only that many are submitted at once) are set
    aside, the rest continue in a fresh pool, and then each set-aside job is retried once,
    alone in a fresh process: a second death is that image's, reported as `lost`.
    With one worker everything runs in this process (a GPU model stays resident here).
    """
    if workers <= 1 or len(jobs) <= 1:
        yield from map(marker, jobs)
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["som.mark.batch"])
    pending = deque(jobs)
    suspects: list[MarkJob] = []
    while pending:
        lost = yield from _run_pool(context, marker, pending, min(workers, len(pending)))
        if lost:
            log.warning(
                "a marking worker died; %d image(s) in flight will be retried, each alone: %s",
                len(lost),
                ", ".join(str(job.source) for job in lost),
            )
            suspects.extend(lost)
    yield from _retry_alone(context, marker, suspects, workers)


def _run_pool(
    context: BaseContext, marker: Marker, pending: deque[MarkJob], workers: int
) -> Generator[ImageReport, None, list[MarkJob]]:
    """Mark `pending` jobs in one pool until done or the pool breaks; returns the lost jobs."""
    in_flight: dict[Future[ImageReport], MarkJob] = {}
    lost: list[MarkJob] = []
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(marker,)) as pool:
        broken = False
        while (pending or in_flight) and not (lost or broken):
            try:
                while pending and len(in_flight) < 2 * workers:
                    job = pending.popleft()
                    in_flight[pool.submit(_run_in_worker, job)] = job
            except BrokenProcessPool:
                pending.appendleft(job)
                broken = True
            if not in_flight:
                break
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                broken = True
            if broken:  # a broken pool fails every job in flight: collect them all now
                done, _ = wait(in_flight, return_when=ALL_COMPLETED)
            for future in done:
                job = in_flight.pop(future)
                error = future.exception()
                if isinstance(error, BrokenProcessPool):
                    lost.append(job)
                elif error is not None:  # e.g. a report that cannot be pickled back
                    yield ImageReport(str(job.source), "failed", reason=f"{type(error).__name__}: {error}")
                else:
                    yield future.result()
    return lost


def _retry_alone(
    context: ForkServerContext, marker: Marker, jobs: Sequence[MarkJob], workers: int
) -> Iterator[ImageReport]:
    """Each job once more in its own fresh process, `workers` at a time, so a second death
    names its image and takes no other with it. Plain processes, not a pool: their exit code
    says how they died."""
    queue = deque(jobs)
    running: dict[Any, tuple[Any, MarkJob]] = {}  # receiving end -> (process, job)
    while queue or running:
        while queue and len(running) < workers:
            job = queue.popleft()
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_mark_alone, args=(marker, job, sender), daemon=True)
            process.start()
            sender.close()
            running[receiver] = (process, job)
        for ready in multiprocessing.connection.wait(list(running)):
            assert isinstance(ready, multiprocessing.connection.Connection)  # wait returns the receivers given
            receiver = ready
            process, job = running.pop(receiver)
            try:
                report: ImageReport = receiver.recv()
            except EOFError:
                process.join()
                reason = worker_death_reason(process.exitcode)
                log.error("%s: %s (retried once, alone)", job.source, reason)
                report = ImageReport(str(job.source), "failed", reason=reason, lost=True)
            else:
                process.join()
            receiver.close()
            yield report


def _mark_alone(marker: Marker, job: MarkJob, sender: Any) -> None:
    _start_worker(marker)
    sender.send(_run_in_worker(job))
    sender.close()


def worker_death_reason(exitcode: int | None) -> str:
    """The quarantine reason for an image whose worker died: by signal (9 is the OOM killer)."""
    if exitcode is not None and exitcode < 0:
        return f"worker died (signal {-exitcode}) while marking"
    return f"worker died (exit code {exitcode}) while marking"


def mark_processes(requested: int, *, segmenter: str, uses_gpu: bool, gpus: int, cpus: int | None) -> int:
    """How many processes `som mark` runs: `requested` (0 = auto) for CPU segmenters, one per
    core by default; always one for a segmenter that holds a GPU model (registry `uses_gpu`).

    Why one even with several GPUs: the segmenter is built here, with its model on this
    process's device (cuda:0), and sent to each worker by pickle, so N workers meant N model
    copies on GPU 0 rather than one per GPU (pick another GPU with --param device=cuda:N). On a
    CPU one process already uses every core through torch's threads; N copies would multiply
    the memory and oversubscribe the cores.
    """
    if not uses_gpu:
        return requested if requested > 0 else (cpus or 1)
    if requested > 1:
        if gpus:
            log.warning(
                "%s runs in one process: each extra process would load its own model copy onto "
                "the same GPU, not one per GPU (%d visible); ignoring --workers %d",
                segmenter,
                gpus,
                requested,
            )
        else:
            log.warning(
                "%s runs in one process (one resident model; torch uses every core); ignoring --workers %d",
                segmenter,
                requested,
            )
    return 1


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
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
) -> MarkSummary:
    """Mark every image under `inputs` into `out_dir`; failures go to quarantine.jsonl.

    Output names: see `collect_jobs`. Images whose worker died count as failed and `lost`.
    Logs the run's images/s and, for SAM, its FLOPs per image and share of the GPU's peak.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = collect_jobs(inputs, out, image_format)
    marker = Marker(segmenter, options, image_format, force, max_aspect_ratio)
    summary = MarkSummary()
    started = time.perf_counter()
    with tqdm(total=len(jobs), unit="img", disable=not progress, desc="marking") as bar:
        for report in run_jobs(marker, jobs, workers):
            summary.reports.append(report)
            if report.status == "failed":
                log.warning("quarantined %s: %s", report.source, report.reason)
            bar.update()
    summary.seconds = time.perf_counter() - started
    log.info("%s", throughput_line(segmenter, summary.count("marked"), summary.seconds))
    summary.reports.sort(key=lambda r: r.source)
    write_quarantine(out / "quarantine.jsonl", summary.reports)
    return summary


def write_quarantine(path: Path, reports: Sequence[ImageReport]) -> None:
    """This run's failed sources with reasons (rewritten each run, removed when none)."""
    failed: list[dict[str, Any]] = [{"source": r.source, "reason": r.reason} for r in reports if r.status == "failed"]
    if not failed:
        path.unlink(missing_ok=True)
        return
    write_atomic(path, "".join(json.dumps(item) + "\n" for item in failed).encode("utf-8"))
