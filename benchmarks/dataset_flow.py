"""Orchestration overhead of the dataset flow: a plain loop vs the flow on 1 and 2 Dask workers.

    python benchmarks/dataset_flow.py                 # 160 images, CPU segmenter (slic)
    python benchmarks/dataset_flow.py --images 400 --short-side 640

Starts its own SeaweedFS and Prefect server on 127.0.0.1, uploads derived real photos, then
marks them three times into separate datasets: (a) `mark_source` called in a plain Python
loop, (b) the flow with one worker process, (c) the flow with two. All three write the same
objects to the same S3; wall times include everything each one does (the flow's listing,
cluster start, manifest and artifacts).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def seaweed(*args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "infra/storage/seaweed.py"), *args], check=True, capture_output=True)


def start_s3(state: Path) -> None:
    seaweed("up", "--state", str(state), "--bucket", "bench", "--stop-with-pid", str(os.getpid()))
    for line in (state / "s3.env").read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        if name.startswith("AWS_"):
            os.environ[name] = value.strip("'\"")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--short-side", type=int, default=480)
    parser.add_argument("--shard-size", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    with tempfile.TemporaryDirectory() as tmp:
        start_s3(Path(tmp) / "s3")
        try:
            run(args)
        finally:  # before the state folder goes: the watchdog finds the server through it
            seaweed("down", "--state", str(Path(tmp) / "s3"))


def run(args: argparse.Namespace) -> None:
    from flows.prefect_api import prefect_api
    from flows.som_dataset import build_som_dataset
    from som import storage
    from som.dataset.config import resolve_dataset_config
    from som.dataset.shard import mark_source
    from som.dataset.sources import list_sources
    from som.segment import build_segmenter
    from tests.helpers.image_sets import derived_photos

    source = "s3://bench/images"
    storage.write_many(
        {storage.join(source, k): v for k, v in derived_photos(args.images, size=args.short_side).items()}
    )
    style = {"short_side": args.short_side}
    params = {"n_segments": 48}

    clock = time.perf_counter()
    config = resolve_dataset_config("s3://bench/loop", segmenter="slic", segmenter_params=params, style=style)
    segmenter = build_segmenter(config.segmenter, config.segmenter_params)
    for item in list_sources(source):
        mark_source(item, "s3://bench/loop", config, segmenter)
    loop = time.perf_counter() - clock

    flows = {}
    with prefect_api():
        for workers in (1, 2):
            clock = time.perf_counter()
            state = build_som_dataset(
                source=source,
                dest=f"s3://bench/flow{workers}",
                segmenter="slic",
                segmenter_params=params,
                short_side=args.short_side,
                shard_size=args.shard_size,
                workers=workers,
                return_state=True,
            )
            flows[workers] = time.perf_counter() - clock
            assert state.is_completed(), state.message

    print(
        f"{args.images} images, slic n_segments=48 at short side {args.short_side}, shards of {args.shard_size}, "
        f"SeaweedFS on 127.0.0.1"
    )
    print("| run | wall s | images/s | vs plain loop |")
    print("|---|---|---|---|")
    print(f"| plain loop, 1 process | {loop:.1f} | {args.images / loop:.2f} | - |")
    for workers, seconds in flows.items():
        print(
            f"| flow, {workers} worker{'s' if workers > 1 else ''} | {seconds:.1f} | {args.images / seconds:.2f} | "
            f"{100 * (seconds - loop) / loop:+.1f}% time |"
        )
    print(f"2 workers vs 1: {flows[1] / flows[2]:.2f}x")


if __name__ == "__main__":
    main()
