"""Prefect UI artifacts for a dataset build: progress, a counts table and a gallery of marks."""

from __future__ import annotations

import base64
import io
import sys
from uuid import UUID

from PIL import Image
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from tqdm import tqdm

from som import storage
from som.dataset.report import BuildReport
from som.train.run_folder import summary_markdown

GALLERY_SIZE = 4
PRESIGNED_SECONDS = 7 * 24 * 3600


def artifact_key(dest: str, kind: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    slug = "".join(c if c.isalnum() else "-" for c in dest.lower()).strip("-")
    return f"som-{kind}-{slug}"[:100].rstrip("-")


class Progress:
    """A progress artifact advanced as shards finish, plus a progress bar on a terminal."""

    def __init__(self, dest: str, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.id: UUID = create_progress_artifact(
            0.0, key=artifact_key(dest, "progress"), description=f"marking {total} shards into {dest}"
        )
        self.bar = tqdm(total=total, unit="shard", desc="marking", disable=not sys.stderr.isatty())

    def advance(self) -> None:
        self.done += 1
        self.bar.update()
        update_progress_artifact(self.id, 100.0 * self.done / self.total)

    def close(self) -> None:
        self.bar.close()


def publish_report(report: BuildReport) -> None:
    create_table_artifact(report.table(), key=artifact_key(report.dest, "table"), description=report.line())
    create_markdown_artifact(
        report.markdown() + "\n\n" + gallery_markdown(report),
        key=artifact_key(report.dest, "summary"),
        description="counts, quarantine and samples",
    )


def gallery_markdown(report: BuildReport) -> str:
    samples = [row for row in report.rows if row.status == "marked" and row.marked_uri][:GALLERY_SIZE]
    if not samples:
        return ""
    lines = ["## Marked samples", ""]
    for row in samples:
        lines.append(f"**{row.source_uri}** ({row.n_marks} marks)\n\n![marked]({viewable_url(row.marked_uri)})\n")
    return "\n".join(lines)


def viewable_url(url: str) -> str:
    """A URL a browser can open: presigned for S3, an inline thumbnail for anything else."""
    if storage.protocol_of(url) in storage.S3_PROTOCOLS:
        fs, path = storage.resolve(url)
        return fs.url(path, expires=PRESIGNED_SECONDS)
    thumbnail = Image.open(io.BytesIO(storage.read_bytes(url)))
    thumbnail.thumbnail((320, 320))
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def publish_train_summary(run_dir: str, export: str) -> None:
    """The training run's numbers and loss curve as the run's markdown artifact."""
    create_markdown_artifact(
        summary_markdown(run_dir, export),
        key=artifact_key(run_dir, "train"),
        description=f"training summary and export of {run_dir}",
    )
