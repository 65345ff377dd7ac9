"""Small benchmark source folders for evaluation runs: real question and label files from
../shared/reference, cut to a handful of questions, with small generated images under the
file names they reference (the reference folder holds no benchmark images).
"""

from __future__ import annotations

import io
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"
POPE_QUESTIONS = REFERENCE / "pope" / "llava_eval" / "llava_pope_test.jsonl"
POPE_LABELS = REFERENCE / "pope" / "AoiDragon_POPE_e3e3926_llava_pinned"
MME_QUESTIONS = REFERENCE / "mme" / "llava_mme.jsonl"
MME_TEMPLATE = REFERENCE / "mme" / "eval_tool" / "Your_Results"
LLAVA_BENCH_COCO = REFERENCE / "llava" / "llava_bench_coco"


def reference_available() -> bool:
    return POPE_QUESTIONS.exists() and MME_QUESTIONS.exists()


def small_image(seed: int, size: int = 48) -> bytes:
    """A JPEG of a few flat coloured blocks: something a superpixel segmenter can tag."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, size=(3, 3, 3), dtype=np.uint8)
    pixels = np.kron(cells, np.ones((size // 3, size // 3, 1), dtype=np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _write_images(root: Path, names: list[str]) -> None:
    for index, name in enumerate(sorted(set(names))):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(small_image(index))


def pope_source(folder: Path, per_split: int = 2) -> Path:
    """LLaVA's POPE layout: llava_pope_test.jsonl (first `per_split` questions of each split),
    coco/coco_pope_<split>.json (the real label files) and val2014/<image>."""
    taken: dict[str, list[dict]] = defaultdict(list)
    with POPE_QUESTIONS.open() as lines:
        for line in lines:
            record = json.loads(line)
            if len(taken[record["category"]]) < per_split:
                taken[record["category"]].append(record)
            if len(taken) == 3 and all(len(v) >= per_split for v in taken.values()):
                break
    records = [r for split in ("adversarial", "popular", "random") for r in taken[split]]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "llava_pope_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    shutil.copytree(POPE_LABELS, folder / "coco")
    _write_images(folder / "val2014", [r["image"] for r in records])
    return folder


def mme_source(folder: Path, tasks: tuple[str, ...] = ("existence", "count"), images_per_task: int = 1) -> Path:
    """LLaVA's MME layout: llava_mme.jsonl (both questions of the first images of `tasks`),
    eval_tool/Your_Results (the real ground truth of those images) and
    MME_Benchmark_release_version/<image>."""
    records = []
    seen: dict[str, list[str]] = defaultdict(list)
    with MME_QUESTIONS.open() as lines:
        for line in lines:
            record = json.loads(line)
            task, image = record["category"], record["image"]
            if task not in tasks:
                continue
            if image not in seen[task]:
                if len(seen[task]) >= images_per_task:
                    continue
                seen[task].append(image)
            records.append(record)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "llava_mme.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    truth = folder / "eval_tool" / "Your_Results"
    truth.mkdir(parents=True)
    for task in tasks:
        names = {Path(image).name for image in seen[task]}
        lines = (MME_TEMPLATE / f"{task}.txt").read_text().splitlines(keepends=True)
        (truth / f"{task}.txt").write_text("".join(line for line in lines if line.split("\t", 1)[0] in names))
    _write_images(folder / "MME_Benchmark_release_version", [r["image"] for r in records])
    return folder


def mme_full_source(folder: Path, truth: Path) -> Path:
    """The real llava_mme.jsonl (2368 questions), the ground-truth template folder `truth`, and
    release images (empty files) only for the ground-truth images that question file lacks."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(MME_QUESTIONS, folder / "llava_mme.jsonl")
    shutil.copytree(truth, folder / "eval_tool" / "Your_Results")
    release = folder / "MME_Benchmark_release_version"
    for image in (
        "landmark/images/03d5e3bfc958be38.jpg",
        "scene/images/Places365_val_00000130.jpg",
        "scene/images/Places365_val_00000131.jpg",
    ):
        (release / image).parent.mkdir(parents=True, exist_ok=True)
        (release / image).write_bytes(b"")
    return folder


def llava_bench_source(folder: Path, questions: int = 3) -> Path:
    """LLaVA-Bench COCO layout: the first `questions` of qa90_questions.jsonl, the real GPT-4
    reference answers and captions/boxes, and images/<image>."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = (LLAVA_BENCH_COCO / "qa90_questions.jsonl").read_text().splitlines(keepends=True)[:questions]
    (folder / "qa90_questions.jsonl").write_text("".join(lines))
    for name in ("qa90_gpt4_answer.jsonl", "caps_boxes_coco2014_val_80.jsonl"):
        shutil.copy(LLAVA_BENCH_COCO / name, folder / name)
    _write_images(folder / "images", [json.loads(line)["image"] for line in lines])
    return folder
