"""How fast does `som serve` answer? Requests/s and latency p50/p95 for 1, 4 and 16 concurrent
clients, with and without --tags auto.

    python benchmarks/serve.py                      # tiny random LLaVA on CPU, 32 requests per level
    python benchmarks/serve.py --requests 64 --max-tokens 32
    python benchmarks/serve.py --model runs/r1/export --device cuda   # a real model on a GPU node

The server is the real `som serve` process (transformers engine, one generation at a time,
--max-concurrency high enough that nothing is refused); clients are threads posting OpenAI
chat requests with a 570x380 photo. Each request's image differs in one 8x8 block, so with
--tags auto every request is segmented and marked (SLIC, no marking cache hits). With the
tiny model the numbers measure the server's overhead (HTTP, image checks, prompt rendering,
marking), not a real model's compute.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from som.chat_api import image_content, text_content  # noqa: E402
from som.serve.endpoint import read_endpoint  # noqa: E402

PHOTO = REPO_ROOT / "tests" / "data" / "extreme_ironing.jpg"


def start_server(model: str, run_dir: Path, tags: str, device: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "som.cli",
        "serve",
        model,
        "--port",
        "0",
        "--run-dir",
        str(run_dir),
        "--max-concurrency",
        "64",
        "--device",
        device,
        "--tags",
        tags,
    ]
    if tags == "auto":
        command += ["--segmenter", "slic"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run_dir / "endpoint.json").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"som serve did not start: {' '.join(command)}")
        time.sleep(0.2)
    return process


def distinct_images(count: int, start: int = 0) -> list[bytes]:
    """JPEGs of the photo, each with its index drawn into the top-left 8x8 block (different
    bytes, so no marking cache hit; the same picture otherwise); image `start + i` is the same
    in every call, so levels that start elsewhere share none."""
    rgb = np.asarray(Image.open(PHOTO).convert("RGB")).copy()
    images = []
    for index in range(start, start + count):
        rgb[:8, :8] = (index * 37 % 256, index // 7 * 53 % 256, index % 7 * 36)
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
        images.append(buffer.getvalue())
    if len(set(images)) != count:
        raise RuntimeError("two benchmark images encode to the same bytes")
    return images


def run_level(url: str, model: str, images: list[bytes], clients: int, max_tokens: int) -> tuple[float, list[float]]:
    """Send every image once from `clients` threads; returns (wall seconds, latencies)."""
    latencies: list[float] = []
    lock = threading.Lock()
    queue = list(range(len(images)))

    def client() -> None:
        with httpx.Client(timeout=600) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    index = queue.pop()
                body = {
                    "model": model,
                    "max_tokens": max_tokens,
                    "messages": [
                        {
                            "role": "user",
                            "content": [image_content(images[index]), text_content("What is the man doing?")],
                        }
                    ],
                }
                started = time.perf_counter()
                response = http.post(f"{url}/chat/completions", json=body)
                elapsed = time.perf_counter() - started
                response.raise_for_status()
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder or hub id (default: a tiny random LLaVA)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--tags", nargs="+", default=["none", "auto"], choices=["none", "auto"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tests.helpers.tiny_llava import build_tiny_llava

            model = build_tiny_llava(Path(tmp) / "tiny_llava")
        print(
            f"som serve {'tiny random LLaVA' if args.model is None else model} on {args.device}, "
            f"{args.requests} requests per level, max_tokens {args.max_tokens}, {os.cpu_count()} cores"
        )
        print("| --tags | clients | req/s | p50 ms | p95 ms |")
        print("|---|---|---|---|---|")
        for tags in args.tags:
            run_dir = Path(tmp) / f"run-{tags}"
            process = start_server(model, run_dir, tags, args.device)
            try:
                endpoint = read_endpoint(run_dir)
                # Warm-up: the first dozen generations of a fresh process run several times slower.
                run_level(endpoint["url"], endpoint["model"], distinct_images(16, start=10_000), 4, args.max_tokens)
                for level, clients in enumerate(args.clients):
                    images = distinct_images(args.requests, start=level * args.requests)
                    wall, latencies = run_level(endpoint["url"], endpoint["model"], images, clients, args.max_tokens)
                    print(
                        f"| {tags} | {clients} | {len(latencies) / wall:.1f} | "
                        f"{statistics.median(latencies) * 1000:.0f} | {percentile(latencies, 95) * 1000:.0f} |",
                        flush=True,
                    )
            finally:
                process.terminate()
                process.wait(timeout=60)


if __name__ == "__main__":
    main()
