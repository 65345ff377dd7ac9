"""Training metrics: one JSON line per optimizer step in ``metrics.jsonl`` (and a log line), and
the end-of-run ``summary.json``.

Each step records its model FLOPs (``flops_per_step``, `som.train.flops`) and its MFU, the
fraction of the GPUs' dense bf16 peak they reach (``mfu``, `som.mfu`; null on the CPU and on a
GPU whose peak is not known).

Why the file is cut back on resume: a run killed after step 57 with its last checkpoint at 50
has logged 51..57 already; the resumed run logs them again from the checkpoint. Dropping the
lines past the checkpoint first keeps exactly one line per step, so a resumed run's curve is
the same file an uninterrupted run writes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from som.mfu import format_flops, utilization
from som.storage import write_bytes_atomic

log = logging.getLogger(__name__)


class MetricsLog:
    """Append-only per-step records in a local JSON-lines file (rank 0 writes it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        """Every record; a torn last line (the process died mid-write) is ignored."""
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: skipping a torn line", self.path)
        return records

    def truncate_after(self, step: int) -> None:
        """Keep only records of steps <= `step` (atomically)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        write_bytes_atomic(str(self.path), text.encode())

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        log.info(
            "step %d loss %.4f lr %.3g grad_norm %s %.1f samples/s %.0f tokens/s %s/step MFU %s",
            record["step"],
            record["loss"],
            record["lr"],
            _fmt(record.get("grad_norm")),
            record["samples_per_s"],
            record["tokens_per_s"],
            _flops(record.get("flops_per_step")),
            _percent(record.get("mfu")),
        )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _flops(value: float | None) -> str:
    return "n/a FLOP" if value is None else format_flops(value)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def step_record(
    *,
    step: int,
    epoch: int,
    loss: float,
    lr: float,
    grad_norm: float | None,
    samples: int,
    tokens: int,
    seconds: float,
    flops: float,
    peak_flops: float | None = None,
    devices: int = 1,
) -> dict[str, Any]:
    """The line logged for one optimizer step (samples, tokens and FLOPs over all `devices`;
    `peak_flops` is one device's, None when unknown)."""
    seconds = max(seconds, 1e-9)
    return {
        "step": step,
        "epoch": epoch,
        "loss": loss,
        "lr": lr,
        "grad_norm": None if grad_norm is None or not math.isfinite(grad_norm) else grad_norm,
        "samples": samples,
        "tokens": tokens,
        "step_time_s": seconds,
        "samples_per_s": samples / seconds,
        "tokens_per_s": tokens / seconds,
        "flops_per_step": flops,
        "mfu": utilization(flops, seconds, peak_flops, devices),
        "time": time.time(),
    }


def summarize(records: list[dict[str, Any]], *, wall_time_s: float, **extra: Any) -> dict[str, Any]:
    """The run summary: steps, first and final loss, throughput and MFU over the logged steps
    (those of the attempt that finished are all there, resumed or not), wall time, plus `extra`.
    FLOP/s and MFU (its steps' MFU weighted by their time) are null unless every step has them."""
    step_time = sum(r["step_time_s"] for r in records)
    samples = sum(r["samples"] for r in records)
    tokens = sum(r["tokens"] for r in records)
    flops = _total(records, lambda r: r.get("flops_per_step"))
    peak_share = _total(records, lambda r: None if r.get("mfu") is None else r["mfu"] * r["step_time_s"])
    return {
        "steps": records[-1]["step"] if records else 0,
        "first_loss": records[0]["loss"] if records else None,
        "final_loss": records[-1]["loss"] if records else None,
        "samples_per_s": samples / step_time if step_time else None,
        "tokens_per_s": tokens / step_time if step_time else None,
        "flops_per_s": flops / step_time if flops is not None and step_time else None,
        "mfu": peak_share / step_time if peak_share is not None and step_time else None,
        "wall_time_s": wall_time_s,
        **extra,
    }


def _total(records: list[dict[str, Any]], value: Callable[[dict[str, Any]], float | None]) -> float | None:
    """The sum of `value` over the records; None when any has none (a line written before
    FLOPs were logged, a CPU step's MFU) or there are no records."""
    values = [value(r) for r in records]
    return None if not values or any(v is None for v in values) else sum(v for v in values if v is not None)
