"""What a finished (or running) training run folder says: its summary and loss curve.

Read by the training flow's summary artifact and by the pipeline's stage table; both only
format what `som.train.loop` wrote (summary.json, metrics.jsonl), so the readers live here once.
"""

from __future__ import annotations

import json
from typing import Any

from som import storage

CURVE_ROWS = 10
"""Points of the loss curve shown in the summary."""


def read_json(url: str) -> Any:
    try:
        return json.loads(storage.read_bytes(url))
    except (FileNotFoundError, ValueError):
        return None


def read_metrics(url: str) -> list[dict[str, Any]]:
    try:
        text = storage.read_bytes(url).decode()
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a torn last line
    return records


def summary_markdown(run_dir: str, export: str) -> str:
    """The run's numbers (summary.json) and a few points of its loss curve (metrics.jsonl)."""
    summary = read_json(storage.join(run_dir, "summary.json")) or {}
    records = read_metrics(storage.join(run_dir, "metrics.jsonl"))
    lines = [
        f"# som-train {run_dir.rstrip('/').rsplit('/', 1)[-1]}",
        "",
        f"Exported model: `{export}`",
        "",
        "| steps | first loss | final loss | samples/s | tokens/s | wall time |",
        "|---|---|---|---|---|---|",
    ]

    def number(key: str, fmt: str) -> str:
        value = summary.get(key)
        return format(value, fmt) if isinstance(value, (int, float)) else "n/a"

    lines.append(
        f"| {summary.get('steps', 'n/a')} | {number('first_loss', '.4f')} | {number('final_loss', '.4f')} "
        f"| {number('samples_per_s', '.1f')} | {number('tokens_per_s', '.0f')} "
        f"| {number('wall_time_s', '.0f')} s |"
    )
    if records:
        stride = max(1, len(records) // CURVE_ROWS)
        picked = records[::stride][: CURVE_ROWS - 1]
        if picked[-1] is not records[-1]:
            picked.append(records[-1])
        lines += ["", "| step | loss | lr |", "|---|---|---|"]
        lines += [
            f"| {r.get('step')} | {r.get('loss', float('nan')):.4f} | {r.get('lr', float('nan')):.3g} |" for r in picked
        ]
    return "\n".join(lines)


def loss_line(run_dir: str) -> str | None:
    """First → final loss from the training run's summary.json, when it wrote one."""
    summary = read_json(storage.join(run_dir, "summary.json"))
    if not isinstance(summary, dict):
        return None
    first, final = summary.get("first_loss"), summary.get("final_loss")
    if first is None or final is None:
        return None
    return f"loss {first:.4f} → {final:.4f} over {summary.get('steps', '?')} steps"
