"""How fast is Set-of-Mark marking? Per-stage times and end-to-end `som mark --masks` throughput.

    python benchmarks/mark_speed.py                  # stages for 20/50/100 masks + end to end
    python benchmarks/mark_speed.py --images 400     # a longer end-to-end run

Stages run in this process on 640-short-side images; the end-to-end run times the whole
`som mark --masks` command (process start-up included) on 780x510 photos with 50 masks each.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_coco import make_dataset  # noqa: E402

from som.images import load_image, resize_short_side  # noqa: E402
from som.mark.annotate import encode_image  # noqa: E402
from som.mark.draw import draw_tags  # noqa: E402
from som.mark.marker import place_tags  # noqa: E402
from som.mark.options import MarkOptions  # noqa: E402
from som.mark.ownership import assign_ownership  # noqa: E402
from som.segment.coco import CocoParams, CocoSegmenter  # noqa: E402


def time_stages(folder: Path, masks: int, repeats: int) -> dict[str, float]:
    annotations = make_dataset(folder, images=repeats, masks=masks, seed=masks)
    segmenter = CocoSegmenter(CocoParams(annotations=str(annotations)))
    options = MarkOptions()
    stages: dict[str, list[float]] = {
        k: [] for k in ("load", "resize", "masks", "ownership", "placement", "draw", "encode")
    }
    for path in sorted(folder.glob("*.jpg")):
        clock = time.perf_counter()
        loaded = load_image(path)
        stages["load"].append(time.perf_counter() - clock)
        clock = time.perf_counter()
        image, _ = resize_short_side(loaded.rgb, options.short_side)
        stages["resize"].append(time.perf_counter() - clock)
        clock = time.perf_counter()
        found = segmenter.generate(image, source=path.name)
        stages["masks"].append(time.perf_counter() - clock)
        clock = time.perf_counter()
        ownership = assign_ownership(found, *image.shape[:2])
        stages["ownership"].append(time.perf_counter() - clock)
        clock = time.perf_counter()
        tags, _ = place_tags(found, ownership, options)
        stages["placement"].append(time.perf_counter() - clock)
        clock = time.perf_counter()
        drawn = draw_tags(image, ownership.owner, tags, options)
        stages["draw"].append(time.perf_counter() - clock)
        clock = time.perf_counter()
        encode_image(drawn, "jpg")
        stages["encode"].append(time.perf_counter() - clock)
    return {k: statistics.median(v) * 1000 for k, v in stages.items()}


def end_to_end(folder: Path, images: int, masks: int, workers: int) -> tuple[float, str]:
    annotations = make_dataset(folder, images=images, masks=masks, seed=7)
    out = folder / "out"
    command = [
        sys.executable,
        "-m",
        "som.cli",
        "mark",
        str(folder),
        "--out",
        str(out),
        "--masks",
        str(annotations),
        "--no-progress",
    ]
    if workers:
        command += ["--workers", str(workers)]
    clock = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return images / (time.perf_counter() - clock), done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="images in the end-to-end run")
    parser.add_argument("--repeats", type=int, default=20, help="images per stage measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("per-image stage medians in ms (640 short side, 780x510 sources resized to 979x640)")
        header = ["masks", "load", "resize", "masks", "ownership", "placement", "draw", "encode", "total", "img/s"]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for count in (20, 50, 100):
            stages = time_stages(Path(tmp) / f"stages{count}", count, args.repeats)
            total = sum(stages.values())
            cells = [str(count)] + [f"{v:.2f}" for v in stages.values()] + [f"{total:.1f}", f"{1000 / total:.1f}"]
            print("| " + " | ".join(cells) + " |")
        print()
        print(f"end to end: som mark --masks, {args.images} images 780x510, 50 masks each, process start included")
        print("| workers | images/s | summary |")
        print("|---|---|---|")
        for workers in (1, 0):
            rate, line = end_to_end(Path(tmp) / f"e2e{workers}", args.images, 50, workers)
            print(f"| {workers or 'auto'} | {rate:.1f} | {line} |")


if __name__ == "__main__":
    main()
