"""What each task of a training job runs: under Slurm through submitit (one task per GPU, or per
CPU slot), or under torchrun / the deepspeed launcher through `main`.

    # Slurm, from Python (flows/train.py does this):
    executor = submitit.AutoExecutor(folder="runs/x/slurm")
    executor.update_parameters(nodes=2, tasks_per_node=8, gpus_per_node=8, timeout_min=600)
    job = executor.submit(TrainJob(load_config("finetune.yaml"), "runs/x"))

    # a launcher sets RANK/WORLD_SIZE/...; a bare `python` runs one process:
    torchrun --nproc-per-node 8 -m som.train.entry --config finetune.yaml --run-dir runs/x
    python -m som.train.entry --config finetune.yaml --run-dir runs/x --set max_steps=10

`TrainJob` is `Checkpointable`: on preemption or time-out Slurm signals the job and submitit
asks `checkpoint()` for what to requeue. It returns a *fresh* `TrainJob` of the same config and
run folder, which resumes from the latest complete checkpoint in the run folder; no training
state travels in the job's pickle.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import submitit

from som.train.config import TrainConfig, load_config

log = logging.getLogger(__name__)


def configure_logging(rank: int) -> None:
    """Log lines tagged with the rank, unless the host application configured logging."""
    if logging.getLogger().handlers:
        return
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")


class TrainJob(submitit.helpers.Checkpointable):
    """One training run (`config` into `run_dir`), callable on every task of a job."""

    def __init__(self, config: TrainConfig, run_dir: str) -> None:
        self.config = config
        self.run_dir = str(run_dir)

    def __call__(self) -> str | None:
        """Train (or resume, or find finished) on this task; returns the exported model's
        folder or URL (the same on every rank)."""
        from som.train.distributed import init_distributed, teardown
        from som.train.loop import train

        configure_logging(int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))))
        env = init_distributed(timeout_min=self.config.dist_timeout_min)
        try:
            result = train(self.config, self.run_dir, env)
        finally:
            teardown()
        return result.export

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """The job to requeue: the same run, resuming from the run folder's checkpoints."""
        log.warning("job interrupted; requeueing %s to resume from its latest checkpoint", self.run_dir)
        return submitit.helpers.DelayedSubmission(TrainJob(self.config, self.run_dir))


def _overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m som.train.entry`: one training process (a launcher runs one per device)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML training config (stage preset applied first)")
    parser.add_argument("--run-dir", required=True, help="run folder: path or s3:// URL")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (repeatable), e.g. --set lora.rank=8",
    )
    args = parser.parse_args(argv)
    config = load_config(args.config, _overrides(args.set))
    export = TrainJob(config, args.run_dir)()
    log.info("exported model: %s", export)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    # Multi-process gloo runs can abort in interpreter shutdown after all the work is done
    # (INFRA-NOTES); everything is written and flushed, so leave without it.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
