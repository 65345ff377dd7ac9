"""The evaluation table: this model's headline scores (plain / tags) beside published numbers.

Why a data file (`published.json`) rather than constants: every number carries its source,
unchecked numbers stay null (shown as "–", never as 0), and adding a paper is a JSON edit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

MISSING = "–"
EXPORT_FOLDER = "hf"
"""The folder a training run exports its model to (som.train.checkpoints.EXPORT, not imported:
that module loads torch)."""


def model_label(model: str) -> str:
    """A short name for a model spec in tables: the hub name or folder name, no API prefix or
    URL; a run's export (``<runs>/<run-id>/hf``) is named by its run folder."""
    spec = model.removeprefix("openai:").removeprefix("hf:").partition("@")[0].rstrip("/")
    parts = [part for part in spec.split("/") if part]
    if len(parts) > 1 and parts[-1] == EXPORT_FOLDER:
        return parts[-2]
    return parts[-1] if parts else spec


@lru_cache(maxsize=1)
def published() -> dict[str, Any]:
    """The contents of som/eval/published.json."""
    return json.loads(resources.files("som.eval").joinpath("published.json").read_text("utf-8"))


def headline(scores: Mapping[str, Any] | None) -> float | None:
    """A benchmark's headline number from its scores dict (None when not scored)."""
    if not scores or scores.get("headline") is None:
        return None
    return float(scores["headline"])


def _cell(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}".rstrip("0").rstrip(".")


def comparison_rows(
    scores: Mapping[str, Mapping[str, Mapping[str, Any]]], model: str, variants: Sequence[str]
) -> list[dict[str, str]]:
    """One row per benchmark: its metric, this model's headline per variant, then each
    published model's number. `scores` is benchmark -> variant -> scores dict. A benchmark
    whose papers report a second number (SEED image vs image + video) gets a derived row
    too (published.json "rows": its value is the scores' `field`)."""
    paper = published()
    derived = paper.get("rows", {})
    keys = []
    for benchmark in scores:
        keys.append((benchmark, benchmark, "headline"))
        keys += [(row, benchmark, spec["field"]) for row, spec in derived.items() if spec["benchmark"] == benchmark]
    rows = []
    for key, benchmark, field in keys:
        row = {"benchmark": key, "metric": paper["metrics"].get(key, "headline")}
        for variant in variants:
            row[f"{model} ({variant})"] = _cell(_number(scores[benchmark].get(variant), field))
        for entry in paper["models"]:
            row[f"{entry['name']} (paper)"] = _cell(entry["scores"].get(key))
        rows.append(row)
    return rows


def _number(scores: Mapping[str, Any] | None, field: str) -> float | None:
    if field == "headline":
        return headline(scores)
    value = (scores or {}).get(field)
    return None if value is None else float(value)


def sources_markdown() -> str:
    """Where the published numbers come from, for the artifact's description."""
    lines = [
        f"- {m['name']}: {m['source']}" + (f" ({m['note']})" if m.get("note") else "") for m in published()["models"]
    ]
    return "Published numbers ('–': not checked, see som/eval/published.json):\n" + "\n".join(lines)
