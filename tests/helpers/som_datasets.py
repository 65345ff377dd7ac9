"""Small real SoM datasets on local storage, for the stages that read them."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from som.dataset.config import resolve_dataset_config
from som.dataset.manifest import write_manifest
from som.dataset.shard import mark_source
from som.dataset.sources import list_sources
from som.segment import build_segmenter
from tests.helpers.image_sets import derived_photos


def som_dataset(tmp_path: Path, segmenter: str = "coco") -> tuple[str, list]:
    """Two photos marked with COCO-style masks (every tag carries its category), or by `segmenter`."""
    raw = tmp_path / "raw"
    raw.mkdir()
    photos = derived_photos(2, size=200)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}]}
    for number, (name, data) in enumerate(photos.items()):
        (raw / name).write_bytes(data)
        width, height = Image.open(io.BytesIO(data)).size  # the record must match the image
        coco["images"].append({"id": number, "file_name": name, "width": width, "height": height})
        for ann, (category, box) in enumerate(
            [(1, (20, 20, 80, 150)), (2, (120, 60, 220, 180)), (1, (150, 10, 200, 50))]
        ):
            x0, y0, x1, y1 = box
            coco["annotations"].append(
                {
                    "id": number * 10 + ann,
                    "image_id": number,
                    "category_id": category,
                    "iscrowd": 0,
                    "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
                }
            )
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    dest = str(tmp_path / "som")
    params = {"n_segments": 8} if segmenter == "slic" else None
    config = resolve_dataset_config(
        dest,
        segmenter=segmenter,
        segmenter_params=params,
        coco=str(tmp_path / "instances.json"),
        style={"short_side": 200},
    )
    segmenter = build_segmenter(config.segmenter, config.segmenter_params)
    rows = [mark_source(source, dest, config, segmenter) for source in list_sources(str(raw))]
    write_manifest(dest, rows)
    return dest, rows
