"""The run folder: checkpoints (every N steps and at the end, the last K kept), the metrics file,
and where they live: a local or shared filesystem path, or an object-storage URL synced with
fsspec from a per-node local staging folder.

A checkpoint is ``checkpoints/step-<8 digits>/``: DeepSpeed's files (model, optimizer and
scheduler shards of every rank), each rank's RNG state, and ``complete.json`` written by rank 0
last, after every rank has saved (and, for object storage, uploaded). Only folders with that
marker count, so a job killed while saving resumes from the previous checkpoint, never a half
one. Resuming needs the same world size: ZeRO's optimizer shards are per rank.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from som import storage

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
MARKER = "complete.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
EXPORT = "hf"
_TAG = re.compile(r"step-(\d{8})")


class ResumeError(RuntimeError):
    """The run folder holds a checkpoint this run cannot continue from; the message says why."""


def tag_for(step: int) -> str:
    return f"step-{step:08d}"


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint: its step and what `complete.json` recorded."""

    step: int
    meta: dict[str, Any]

    @property
    def tag(self) -> str:
        return tag_for(self.step)


def _node_name() -> str:
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


class RunFolder:
    """Where a run keeps its state. Local paths are used in place; for a remote URL every node
    stages checkpoints in a local folder (one per run and node) and uploads them."""

    def __init__(self, run_dir: str, staging_root: str | None = None) -> None:
        self.run_dir = str(run_dir)
        self.remote = storage.protocol_of(self.run_dir) not in storage.LOCAL_PROTOCOLS
        if self.remote:
            key = hashlib.sha256(self.run_dir.encode()).hexdigest()[:12]
            root = Path(staging_root or tempfile.gettempdir()) / "somflow-runs"
            self.local = root / f"{key}-{_node_name()}"
        else:
            self.local = Path(storage.resolve(self.run_dir)[1])

    # -------------------------------------------------------------- names

    def url(self, *parts: str) -> str:
        """A URL (or path) inside the run folder."""
        return storage.join(self.run_dir, *parts)

    @property
    def checkpoints(self) -> Path:
        """Local folder DeepSpeed saves into and loads from."""
        return self.local / CHECKPOINTS

    @property
    def metrics_path(self) -> Path:
        return self.local / METRICS

    # -------------------------------------------------------------- discovery

    def complete(self) -> list[Checkpoint]:
        """Complete checkpoints, oldest first (read from the authoritative place)."""
        found = []
        if self.remote:
            fs, root = storage.resolve(self.url(CHECKPOINTS))
            fs.invalidate_cache(root)
            try:
                names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
            except FileNotFoundError:
                names = []
        else:
            names = [p.name for p in self.checkpoints.iterdir()] if self.checkpoints.exists() else []
        for name in names:
            match = _TAG.fullmatch(name)
            if not match:
                continue
            marker = self.url(CHECKPOINTS, name, MARKER)
            if storage.exists(marker):
                found.append(Checkpoint(int(match.group(1)), json.loads(storage.read_bytes(marker))))
        return sorted(found, key=lambda c: c.step)

    def latest(self) -> Checkpoint | None:
        found = self.complete()
        return found[-1] if found else None

    def check_resumable(self, checkpoint: Checkpoint, fingerprint: str, world_size: int) -> None:
        """Refuse a checkpoint of another config or world size, saying what to do."""
        meta = checkpoint.meta
        if meta.get("fingerprint") != fingerprint:
            raise ResumeError(
                f"{self.url(CHECKPOINTS, checkpoint.tag)} was written by a run with config "
                f"fingerprint {meta.get('fingerprint')}, this config is {fingerprint}; use a new "
                "run_dir for a different config (or restore the original one to resume)"
            )
        if meta.get("world_size") != world_size:
            raise ResumeError(
                f"{self.url(CHECKPOINTS, checkpoint.tag)} was written by {meta.get('world_size')} "
                f"processes, this run has {world_size}; ZeRO optimizer shards are per process: "
                "resume with the same number of tasks or start a new run_dir"
            )

    # -------------------------------------------------------------- save / load helpers

    def save_rng(self, tag: str, rank: int) -> None:
        """This rank's RNG states (LoRA dropout draws from them), next to DeepSpeed's files."""
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        path = self.checkpoints / tag / f"rng_state_{rank}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def load_rng(self, tag: str, rank: int) -> None:
        path = self.checkpoints / tag / f"rng_state_{rank}.pt"
        state = torch.load(path, weights_only=True)
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])

    def upload(self, tag: str) -> None:
        """Copy this node's files of checkpoint `tag` to the remote run folder, then drop the
        node's older staged checkpoints. No-op for local run folders."""
        if not self.remote:
            return
        folder = self.checkpoints / tag
        fs, _ = storage.resolve(self.run_dir)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            target = storage.resolve(self.url(CHECKPOINTS, tag, *path.relative_to(folder).parts))[1]
            fs.put_file(str(path), target)
        for old in self.checkpoints.iterdir():
            if old.name != tag and _TAG.fullmatch(old.name):
                shutil.rmtree(old, ignore_errors=True)
        log.info("uploaded %s from %s to %s", tag, _node_name(), self.run_dir)

    def download(self, checkpoint: Checkpoint) -> None:
        """Stage a remote checkpoint locally (whole, as any rank may need any shard)."""
        if not self.remote or (self.checkpoints / checkpoint.tag / MARKER).exists():
            return
        fs, root = storage.resolve(self.url(CHECKPOINTS, checkpoint.tag))
        staging = self.checkpoints / f".{checkpoint.tag}.download"
        shutil.rmtree(staging, ignore_errors=True)
        for remote in fs.find(root):
            local = staging / remote[len(root.rstrip("/")) + 1 :]
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(local))
        shutil.rmtree(self.checkpoints / checkpoint.tag, ignore_errors=True)
        os.replace(staging, self.checkpoints / checkpoint.tag)
        log.info("downloaded %s to %s", checkpoint.tag, self.checkpoints)

    def mark_complete(self, step: int, meta: dict[str, Any]) -> None:
        """Rank 0, after every rank saved (and uploaded): the checkpoint now counts."""
        data = json.dumps({"step": step, **meta}, indent=1).encode()
        if self.remote:
            storage.write_bytes_atomic(str(self.checkpoints / tag_for(step) / MARKER), data)
        storage.write_bytes_atomic(self.url(CHECKPOINTS, tag_for(step), MARKER), data)

    def prune(self, keep_last: int) -> list[int]:
        """Delete all but the newest `keep_last` complete checkpoints, and unfinished ones
        older than the newest; returns the deleted steps. Rank 0 only."""
        complete = self.complete()
        if not complete:
            return []
        keep = {c.step for c in complete[-keep_last:]}
        newest = complete[-1].step
        doomed = [c.step for c in complete if c.step not in keep]
        doomed += [s for s in self._listed_steps() if s < newest and s not in keep and s not in doomed]
        for step in doomed:
            # the marker goes first, so a folder half deleted never looks complete
            self._remove(self.url(CHECKPOINTS, tag_for(step), MARKER))
            self._remove(self.url(CHECKPOINTS, tag_for(step)), recursive=True)
            if self.remote:
                shutil.rmtree(self.checkpoints / tag_for(step), ignore_errors=True)
        if doomed:
            log.info("removed checkpoints of steps %s (keeping %d)", sorted(doomed), keep_last)
        return sorted(doomed)

    def _listed_steps(self) -> list[int]:
        fs, root = storage.resolve(self.url(CHECKPOINTS))
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
        except FileNotFoundError:
            return []
        return [int(m.group(1)) for n in names if (m := _TAG.fullmatch(n))]

    def _remove(self, url: str, recursive: bool = False) -> None:
        fs, path = storage.resolve(url)
        try:
            fs.rm(path, recursive=recursive)
        except FileNotFoundError:
            pass

    # -------------------------------------------------------------- metrics file

    def pull_metrics(self) -> None:
        """Remote runs: bring the metrics written so far into staging before appending."""
        if self.remote and storage.exists(self.url(METRICS)):
            storage.write_bytes_atomic(str(self.metrics_path), storage.read_bytes(self.url(METRICS)))

    def push_metrics(self) -> None:
        if self.remote and self.metrics_path.exists():
            storage.write_bytes_atomic(self.url(METRICS), self.metrics_path.read_bytes())
