"""How fast does training go? Samples/s and tokens/s of the data pipeline alone (decode, pad to
square, process, tokenize, mask, collate) and of whole training steps (DeepSpeed, one process
per device or CPU slot).

    python benchmarks/train_throughput.py                        # tiny CPU model, synthetic data
    python benchmarks/train_throughput.py --images 200 --image-size 640 --workers 0 2
    python benchmarks/train_throughput.py --config finetune.yaml --steps 50 --world-sizes 8

Without --config the model is a tiny random LLaVA built from parts (CLIP 32 px, Llama hidden
64) and the data are synthetic marked images with listing answers, so the numbers measure the
pipeline's overhead, not a real model's compute. Training runs as real processes started like
a launcher starts them (process start-up is excluded: rates come from the logged steps after
the first, which also pays one-off costs). FLOP/step and MFU are the loop's own analytic
accounting (som.train.flops, som.mfu); MFU is "–" on the CPU or a GPU whose peak is unknown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import yaml  # noqa: E402

from som.mfu import format_flops  # noqa: E402
from som.train.config import TrainConfig, load_config  # noqa: E402
from som.train.distributed import free_port  # noqa: E402
from som.train.metrics import summarize  # noqa: E402


def tiny_setup(folder: Path, images: int, image_size: int) -> dict[str, Any]:
    """Tiny model parts and synthetic listing data; the config values that use them."""
    from tests.helpers.tiny_clip import build_tiny_clip
    from tests.helpers.tiny_train import build_tiny_lm, make_listing_dataset

    data = make_listing_dataset(folder / "data", count=images, image_size=image_size)
    return {
        "vision_tower": build_tiny_clip(folder / "clip"),
        "language_model": build_tiny_lm(folder / "lm"),
        "local_files_only": True,
        "data_url": str(data),
        "image_root": str(data.parent),
        "global_batch_size": 8,
        "micro_batch_size": 2,
        "max_length": 512,
        "gradient_checkpointing": False,
        "lr": 1e-3,
    }


def data_throughput(config: TrainConfig, workers: int, batches: int) -> tuple[float, float]:
    """(samples/s, tokens/s) of the DataLoader alone, after one warm-up batch."""
    import torch

    from som.train.data import SupervisedCollator, SupervisedDataset
    from som.train.model import build_model

    processor = build_model(config).processor
    dataset = SupervisedDataset.from_url(
        config.data_url,
        processor,
        image_root=config.image_root,
        template=config.template,
        max_length=config.max_length,
        pad_to_square=config.pad_to_square,
    )
    dataset.validate(config.max_error_fraction)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.micro_batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=SupervisedCollator(processor.tokenizer.pad_token_id),
        drop_last=True,
    )
    samples = tokens = 0
    iterator = iter(loader)
    next(iterator)
    clock = time.perf_counter()
    for _, batch in zip(range(batches), iterator, strict=False):
        samples += len(batch["ids"])
        tokens += int(batch["attention_mask"].sum())
    seconds = time.perf_counter() - clock
    return samples / seconds, tokens / seconds


def train_throughput(values: dict[str, Any], world_size: int, folder: Path) -> dict[str, float]:
    """Train `values` with `world_size` processes; rates over the logged steps after the first."""
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(values))
    run_dir = folder / "run"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO_ROOT),
        "TOKENIZERS_PARALLELISM": "false",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(world_size),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "som.train.entry", "--config", str(config_path), "--run-dir", str(run_dir)],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(folder / f"rank{rank}.log").open("w"),
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
        )
        for rank in range(world_size)
    ]
    for proc in procs:
        proc.wait(timeout=1800)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        raise RuntimeError(f"training failed; see {folder}/rank0.log:\n{(folder / 'rank0.log').read_text()[-3000:]}")
    records = [json.loads(line) for line in metrics.read_text().splitlines()][1:]
    summary = summarize(records, wall_time_s=0.0)
    return {
        "samples_per_s": summary["samples_per_s"],
        "tokens_per_s": summary["tokens_per_s"],
        "ms_per_step": 1000 * statistics.median(r["step_time_s"] for r in records),
        "flops_per_step": statistics.median(r["flops_per_step"] for r in records),
        "mfu": summary["mfu"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="a training YAML (default: tiny CPU model, synthetic data)")
    parser.add_argument("--images", type=int, default=64, help="synthetic images (without --config)")
    parser.add_argument("--image-size", type=int, default=640, help="synthetic image width in px")
    parser.add_argument("--batches", type=int, default=24, help="data-pipeline batches to time")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers")
    parser.add_argument("--steps", type=int, default=30, help="training steps per run")
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--zero-stages", type=int, nargs="+", default=[2, 3])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = (
            yaml.safe_load(Path(args.config).read_text())
            if args.config
            else tiny_setup(Path(tmp), args.images, args.image_size)
        )
        config = load_config(base)
        print(
            f"data pipeline: micro batch {config.micro_batch_size}, template {config.template}, "
            f"{'synthetic ' + str(args.image_size) + ' px images' if not args.config else config.data_url}"
        )
        print("| workers | samples/s | tokens/s |")
        print("|---|---|---|")
        for workers in args.workers:
            samples, tokens = data_throughput(config, workers, args.batches)
            print(f"| {workers} | {samples:.1f} | {tokens:.0f} |")
        print()
        print(
            f"training steps: global batch {config.global_batch_size}, micro {config.micro_batch_size}, "
            f"{args.steps} steps, rates over steps 2..{args.steps}"
        )
        print("| ZeRO | processes | samples/s | tokens/s | ms/step | FLOP/step | MFU |")
        print("|---|---|---|---|---|---|---|")
        for stage in args.zero_stages:
            for world in args.world_sizes:
                folder = Path(tmp) / f"z{stage}-w{world}"
                folder.mkdir()
                values = {
                    **base,
                    "zero_stage": stage,
                    "max_steps": args.steps,
                    "save_every": args.steps,
                    "dataloader_workers": 0,
                }
                rates = train_throughput(values, world, folder)
                mfu = "–" if rates["mfu"] is None else f"{100 * rates['mfu']:.1f}%"
                print(
                    f"| {stage} | {world} | {rates['samples_per_s']:.1f} | "
                    f"{rates['tokens_per_s']:.0f} | {rates['ms_per_step']:.0f} | "
                    f"{format_flops(rates['flops_per_step'])} | {mfu} |"
                )


if __name__ == "__main__":
    main()
