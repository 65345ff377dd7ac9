"""Tiny GQA and SEED-Bench source folders in the published layouts, for end-to-end runs.

GQA: the first questions of LLaVA's real llava_gqa_testdev_balanced.jsonl (../shared/reference)
with generated images, plus a constructed testdev_balanced_questions.json (GQA's schema; the
real answer key is not in the reference folder). SEED: a constructed SEED-Bench.json (the
question file is not shipped) with image questions and, optionally, one video question per
video dimension, the videos generated in LLaVA's `videos/<dimension folder>/` layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.helpers.eval_sources import REFERENCE, small_image

GQA_QUESTIONS = REFERENCE / "gqa" / "llava_gqa_testdev_balanced.jsonl"
VALUE_STEP = 7
"""Frame i of a `tiny_video` is flat grey i * VALUE_STEP (mod 256), so a decoded frame tells its index."""


def tiny_video(path: Path, frames: int, fps: float = 10.0, size: tuple[int, int] = (32, 24)) -> Path:
    """An MJPG .avi whose frame i is flat grey i * VALUE_STEP: `frame_number` reads the index back."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    for index in range(frames):
        writer.write(np.full((size[1], size[0], 3), (index * VALUE_STEP) % 256, dtype=np.uint8))
    writer.release()
    return path


def frame_number(png: bytes) -> int:
    """The index of a `tiny_video` frame (below 256 / VALUE_STEP frames) from its PNG bytes."""
    import cv2

    pixels = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    return int(round(float(pixels.mean()) / VALUE_STEP))


def gqa_source(folder: Path, n: int = 4) -> Path:
    """LLaVA's GQA layout: llava_gqa_testdev_balanced.jsonl (first `n` real questions),
    data/images/<image> and data/testdev_balanced_questions.json (constructed: answers "yes"
    / "no" for even / odd positions, the odd ones open "query" questions)."""
    lines = GQA_QUESTIONS.read_text().splitlines(keepends=True)[:n]
    records = [json.loads(line) for line in lines]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "llava_gqa_testdev_balanced.jsonl").write_text("".join(lines))
    images = folder / "data" / "images"
    images.mkdir(parents=True, exist_ok=True)
    for index, record in enumerate(records):
        (images / record["image"]).write_bytes(small_image(index))
    key = {
        str(record["question_id"]): {
            "question": record["text"].split("\n")[0],
            "imageId": record["image"].rsplit(".", 1)[0],
            "answer": "yes" if index % 2 == 0 else "no",
            "isBalanced": True,
            "types": {
                "structural": "verify" if index % 2 == 0 else "query",
                "semantic": "attr",
                "detailed": "verifyAttr",
            },
            "groups": {"global": None, "local": f"10q-{index}"},
            "semantic": [],
            "entailed": [],
            "equivalent": [],
        }
        for index, record in enumerate(records)
    }
    (folder / "data" / "testdev_balanced_questions.json").write_text(json.dumps(key))
    return folder


def _seed_question(qid: str, type_id: int, data_type: str, data_id: str, answer: str, **extra: object) -> dict:
    return {
        "question_id": qid,
        "question": f"What is shown in {qid}?",
        "answer": answer,
        "question_type_id": type_id,
        "data_type": data_type,
        "data_id": data_id,
        "choice_a": "a dog",
        "choice_b": "a cat",
        "choice_c": "two birds",
        "choice_d": "nothing",
        **extra,
    }


def seed_source(folder: Path, n: int = 4, with_video: bool = True) -> Path:
    """SEED-Bench's layout: SEED-Bench.json (`n` image questions, dimensions 1..9 in turn, and
    with_video one question per video dimension 10-12), SEED-Bench-image/<data_id>, and the
    videos under videos/20bn-something-something-v2, videos/EPIC-KITCHENS (the file name of
    data_id, as LLaVA's script looks it up) and videos/BreakfastII_15fps_qvga_sync."""
    folder.mkdir(parents=True, exist_ok=True)
    questions = [
        _seed_question(str(1000 + i), i % 9 + 1, "image", f"{1000 + i}_cc3m.jpg", "ABCD"[i % 4]) for i in range(n)
    ]
    for index, question in enumerate(questions):
        image = folder / "SEED-Bench-image" / question["data_id"]
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(small_image(index))
    if with_video:
        videos = folder / "videos"
        tiny_video(videos / "20bn-something-something-v2" / "94328.avi", 31)
        tiny_video(videos / "EPIC-KITCHENS" / "P03_24.avi", 30, fps=10.0)
        tiny_video(videos / "BreakfastII_15fps_qvga_sync" / "P06" / "cam01" / "P06_cereals.avi", 30, fps=15.0)
        questions += [
            _seed_question("v1738", 10, "video", "94328.avi", "B"),
            _seed_question("v1962", 11, "video", "P03/P03_24.avi", "C", segment=[1.0, 2.5]),
            _seed_question("v4397", 12, "video", "P06/cam01/P06_cereals.avi", "D", segment=[3, 100]),
        ]
    names = [
        "Scene Understanding",
        "Instance Identity",
        "Instance Attributes",
        "Instance Location",
        "Instances Counting",
        "Spatial Relation",
        "Instance Interaction",
        "Visual Reasoning",
        "Text Understanding",
        "Action Recognition",
        "Action Prediction",
        "Procedure Understanding",
    ]
    annotation = {"question_type": {name: i for i, name in enumerate(names, start=1)}, "questions": questions}
    (folder / "SEED-Bench.json").write_text(json.dumps(annotation))
    return folder
