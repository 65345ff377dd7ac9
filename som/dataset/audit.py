"""Check a dataset's invariants after a build, however that build ended (crash, kill, outage).

A build may die anywhere; what must hold afterwards (and what the chaos suite asserts) is:
every object under <dest>/marks/ is named by a row of the latest manifest, every object a row
names exists, each source URI has one row, and every failed row says why. Objects are listed
once and compared as sets, so an audit costs one listing plus one manifest read.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from som import storage
from som.dataset.manifest import ManifestRow, read_manifest

log = logging.getLogger(__name__)

OK_STATUSES = frozenset({"marked"})
FAILED_STATUSES = frozenset({"failed", "quarantined"})


@dataclass(frozen=True)
class AuditReport:
    """What an audit of one dataset found; `clean` is the invariant the chaos suite keeps."""

    rows: int  # manifest rows in _latest
    ok: int  # rows with status marked
    failed: int  # rows failed/quarantined (each must carry a non-empty reason)
    orphaned_objects: list[str] = field(default_factory=list)  # marks/ objects no row references
    missing_objects: list[str] = field(default_factory=list)  # objects rows name that are absent
    duplicate_sources: list[str] = field(default_factory=list)  # source URIs in more than one row
    failed_without_reason: list[str] = field(default_factory=list)  # source URIs of such rows

    @property
    def clean(self) -> bool:
        """No orphans, no missing objects, no duplicate sources, no reasonless failures."""
        return not (
            self.orphaned_objects or self.missing_objects or self.duplicate_sources or self.failed_without_reason
        )

    def summary(self) -> str:
        """One line for logs and assertion messages."""
        return (
            f"{self.rows} rows ({self.ok} ok, {self.failed} failed); "
            f"{len(self.orphaned_objects)} orphaned, {len(self.missing_objects)} missing, "
            f"{len(self.duplicate_sources)} duplicate sources, "
            f"{len(self.failed_without_reason)} failed without reason"
        )


def _key(dest: str, url: str) -> str:
    """`url` relative to `dest` (e.g. marks/<sha>.jpg), so listings and rows compare equal
    whatever form (s3://, file://, plain path) each was written in."""
    _, root = storage.resolve(dest)
    _, path = storage.resolve(url)
    root = root.rstrip("/")
    return path[len(root) + 1 :] if path.startswith(root + "/") else path


def list_mark_objects(dest: str) -> list[str]:
    """Keys (relative to `dest`) of every object under <dest>/marks/, hidden temp files excluded.

    Hidden names are atomic-write temporaries (local storage), not published objects."""
    fs, root = storage.resolve(storage.join(dest, "marks"))
    root = root.rstrip("/")
    fs.invalidate_cache(root)
    try:
        found = fs.find(root)
    except FileNotFoundError:
        found = []
    keys = []
    for path in found:
        if not path.startswith(root + "/"):
            continue
        name = path.rsplit("/", 1)[-1]
        if name.startswith("."):
            continue
        keys.append("marks/" + path[len(root) + 1 :])
    return sorted(keys)


def _referenced(dest: str, row: ManifestRow) -> list[str]:
    """Keys of the objects a row names (marked image and JSON; none for failed rows)."""
    return [_key(dest, url) for url in (row.marked_uri, row.json_uri) if url]


def audit(dest: str) -> AuditReport:
    """Audit the latest manifest of `dest` against the objects under <dest>/marks/."""
    rows = read_manifest(dest)
    present = set(list_mark_objects(dest))
    referenced: set[str] = set()
    missing: list[str] = []
    for row in rows:
        for key in _referenced(dest, row):
            referenced.add(key)
            if key not in present:
                missing.append(key)
    counts = Counter(row.source_uri for row in rows)
    failed_rows = [row for row in rows if row.status in FAILED_STATUSES]
    report = AuditReport(
        rows=len(rows),
        ok=sum(row.status in OK_STATUSES for row in rows),
        failed=len(failed_rows),
        orphaned_objects=sorted(present - referenced),
        missing_objects=sorted(set(missing)),
        duplicate_sources=sorted(uri for uri, n in counts.items() if n > 1),
        failed_without_reason=sorted(row.source_uri for row in failed_rows if not (row.error or "").strip()),
    )
    log.info("audit of %s: %s", dest, report.summary())
    return report
