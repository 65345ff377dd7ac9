"""Synthetic COCO instances files over real photos, for benchmarks.

Each image gets `masks` random star-shaped polygons of mixed sizes (many small, some large)
that overlap the way SAM masks do, so ownership and placement do realistic work.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

REFERENCE_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "images"
PHOTOS = ["llava_serve/extreme_ironing.jpg", "llava_serve/waterview.jpg", "microsoft_som/ironing_man.jpg"]


def random_polygon(rng: np.random.Generator, width: int, height: int) -> list[float]:
    radius = float(np.exp(rng.uniform(np.log(8), np.log(min(width, height) / 2.5))))
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    angles = np.sort(rng.uniform(0, 2 * math.pi, rng.integers(6, 16)))
    radii = radius * rng.uniform(0.5, 1.0, angles.size)
    xs = np.clip(cx + radii * np.cos(angles), 0, width)
    ys = np.clip(cy + radii * np.sin(angles), 0, height)
    return np.stack([xs, ys], axis=1).ravel().round(2).tolist()


def make_dataset(folder: Path, images: int, masks: int, size: tuple[int, int] = (780, 510), seed: int = 0) -> Path:
    """Write `images` JPEGs of `size` cut from the reference photos plus instances.json."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sources = [Image.open(REFERENCE_IMAGES / p).convert("RGB") for p in PHOTOS]
    coco: dict = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for index in range(images):
        photo = sources[index % len(sources)]
        scale = max(size[0] / photo.width, size[1] / photo.height) * rng.uniform(1.0, 1.3)
        big = photo.resize((math.ceil(photo.width * scale), math.ceil(photo.height * scale)))
        x = int(rng.integers(0, big.width - size[0] + 1))
        y = int(rng.integers(0, big.height - size[1] + 1))
        name = f"img_{index:05d}.jpg"
        big.crop((x, y, x + size[0], y + size[1])).save(folder / name, quality=90)
        coco["images"].append({"id": index, "file_name": name, "width": size[0], "height": size[1]})
        for _ in range(masks):
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": index,
                    "category_id": 1,
                    "iscrowd": 0,
                    "segmentation": [random_polygon(rng, *size)],
                }
            )
    path = folder / "instances.json"
    path.write_text(json.dumps(coco))
    return path
