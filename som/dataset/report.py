"""What a dataset build did, in numbers a person checks first (counts, throughput, failures)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from som.dataset.manifest import ManifestRow


@dataclass
class BuildReport:
    """Counts of one build run; `rows` are the rows this run produced."""

    dest: str
    version: str | None
    seen: int
    new: int
    rows: list[ManifestRow] = field(default_factory=list)
    seconds: float = 0.0
    shards: int = 0
    cached_shards: int = 0
    failed_shards: int = 0
    failed_shard_images: int = 0
    total_rows: int = 0

    @property
    def status_counts(self) -> Counter:
        return Counter(row.status for row in self.rows)

    @property
    def marks_per_image(self) -> float:
        marked = [row.n_marks for row in self.rows if row.status == "marked"]
        return sum(marked) / len(marked) if marked else 0.0

    @property
    def images_per_second(self) -> float:
        return len(self.rows) / self.seconds if self.seconds > 0 else 0.0

    def table(self) -> list[dict[str, object]]:
        counts = self.status_counts
        return [
            {"metric": "images seen", "value": self.seen},
            {"metric": "images new", "value": self.new},
            {"metric": "images marked", "value": counts["marked"]},
            {"metric": "images skipped (no tag survived)", "value": counts["skipped"]},
            {"metric": "images failed (quarantined)", "value": counts["failed"]},
            {"metric": "images in failed shards (not processed)", "value": self.failed_shard_images},
            {"metric": "marks per marked image", "value": round(self.marks_per_image, 2)},
            {"metric": "images/s", "value": round(self.images_per_second, 2)},
            {"metric": "wall time (s)", "value": round(self.seconds, 1)},
            {
                "metric": "shards (cached / failed)",
                "value": f"{self.shards} ({self.cached_shards} / {self.failed_shards})",
            },
            {"metric": "manifest rows", "value": self.total_rows},
        ]

    def quarantine(self) -> list[ManifestRow]:
        return [row for row in self.rows if row.status == "failed"]

    def markdown(self) -> str:
        lines = [
            f"# SoM dataset `{self.dest}` version `{self.version or '(unchanged)'}`",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [f"| {row['metric']} | {row['value']} |" for row in self.table()]
        bad = self.quarantine()
        if bad:
            lines += ["", "## Quarantined images", "", "| source | reason |", "|---|---|"]
            lines += [f"| {row.source_uri} | {row.error} |" for row in bad[:50]]
            if len(bad) > 50:
                lines.append(f"| … {len(bad) - 50} more (see the manifest's `error` column) | |")
        return "\n".join(lines)

    def line(self) -> str:
        counts = self.status_counts
        return (
            f"{self.seen} images seen, {self.new} new: {counts['marked']} marked, {counts['skipped']} skipped, "
            f"{counts['failed']} quarantined, {self.failed_shard_images} in failed shards; "
            f"{self.images_per_second:.1f} images/s; manifest {self.version or 'unchanged'} ({self.total_rows} rows)"
        )
