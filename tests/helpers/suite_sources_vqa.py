"""Tiny TextVQA / VQAv2 / VizWiz source folders in LLaVA's published layouts, for runs end to end.

Questions, annotations and ids are made up (the reference folder ships no TextVQA annotations and
no VQAv2 files); prompts follow LLaVA's question files to the letter, and the images are small
generated JPEGs under the names the question files reference.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.eval_sources import small_image

SHORT = "Answer the question using a single word or phrase."
VIZWIZ_HINT = "When the provided information is insufficient, respond with 'Unanswerable'."


def _jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(sorted(set(names))):
        (folder / name).write_bytes(small_image(index))


def textvqa_source(folder: Path, n: int = 4) -> Path:
    """llava_textvqa_val_v051_ocr.jsonl (questions 0 and 1 share an image, as TextVQA's do),
    TextVQA_0.5.1_val.json (answer "sign <i>" for question i) and train_images/."""
    questions, data = [], []
    for i in range(n):
        image_id = f"{max(i, 1) - 1:016x}" if i < 2 else f"{i:016x}"
        question = f"What does sign {i} say?"
        ocr = ", ".join(["SIGN", str(i)]) if i % 2 == 0 else ""
        questions.append(
            {
                "question_id": image_id,
                "image": f"{image_id}.jpg",
                "category": "default",
                "text": f"{question}\nReference OCR token: {ocr}\n{SHORT}",
            }
        )
        data.append(
            {
                "question_id": 34602 + i,
                "image_id": image_id,
                "question": question,
                "answers": [f"sign {i}"] * 7 + ["sign"] * 3,
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    _jsonl(folder / "llava_textvqa_val_v051_ocr.jsonl", questions)
    (folder / "TextVQA_0.5.1_val.json").write_text(json.dumps({"dataset_name": "textvqa", "data": data}))
    _images(folder / "train_images", [q["image"] for q in questions])
    return folder


def vqav2_source(folder: Path, n: int = 4, *, split: str = "test-dev") -> Path:
    """split "test-dev": llava_vqav2_mscoco_test-dev2015.jsonl (n questions),
    llava_vqav2_mscoco_test2015.jsonl (those plus 2 more, test-dev ones not first) and test2015/.
    split "val": v2_mscoco_val2014_annotations.json, v2_OpenEnded_mscoco_val2014_questions.json
    (answer "<i>" to question i, a number question) and val2014/."""
    folder.mkdir(parents=True, exist_ok=True)
    if split == "val":
        questions, annotations = [], []
        for i in range(n):
            image_id = 42 + i
            questions.append(
                {
                    "image_id": image_id,
                    "question": f"How many dogs are in picture {i}?",
                    "question_id": image_id * 1000 + i,
                }
            )
            annotations.append(
                {
                    "question_id": image_id * 1000 + i,
                    "image_id": image_id,
                    "question_type": "how many",
                    "answer_type": "number",
                    "multiple_choice_answer": str(i),
                    "answers": [{"answer": str(i), "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)],
                }
            )
        (folder / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({"questions": questions}))
        (folder / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": annotations}))
        _images(folder / "val2014", [f"COCO_val2014_{q['image_id']:012d}.jpg" for q in questions])
        return folder
    records = [
        {
            "question_id": (262144 + i) * 1000,
            "image": f"COCO_test2015_{262144 + i:012d}.jpg",
            "text": f"What color is thing {i}?\n{SHORT}",
            "category": "default",
        }
        for i in range(n)
    ]
    extra = [
        {
            "question_id": 1000 + i,
            "image": f"COCO_test2015_{1 + i:012d}.jpg",
            "text": f"Is it {i}?\n{SHORT}",
            "category": "default",
        }
        for i in range(2)
    ]
    _jsonl(folder / "llava_vqav2_mscoco_test-dev2015.jsonl", records)
    _jsonl(folder / "llava_vqav2_mscoco_test2015.jsonl", extra[:1] + records + extra[1:])
    _images(folder / "test2015", [r["image"] for r in records])
    return folder


def vizwiz_source(folder: Path, n: int = 4, *, split: str = "test") -> Path:
    """split "test": llava_test.jsonl (question_id i <-> VizWiz_test_<i:08d>.jpg) and test/.
    split "val": val.json (answer "unanswerable" to question 0, "red" to the others) and val/."""
    folder.mkdir(parents=True, exist_ok=True)
    if split == "val":
        records = [
            {
                "image": f"VizWiz_val_{i:08d}.jpg",
                "question": f"What color is shirt {i}?",
                "answer_type": "unanswerable" if i == 0 else "other",
                "answerable": int(i != 0),
                "answers": [{"answer": "unanswerable" if i == 0 else "red", "answer_confidence": "yes"}] * 10,
            }
            for i in range(n)
        ]
        (folder / "val.json").write_text(json.dumps(records))
        _images(folder / "val", [r["image"] for r in records])
        return folder
    records = [
        {
            "question_id": i,
            "image": f"VizWiz_test_{i:08d}.jpg",
            "category": "default",
            "text": f"What is this {i}?\n{VIZWIZ_HINT}\n{SHORT}",
        }
        for i in range(n)
    ]
    _jsonl(folder / "llava_test.jsonl", records)
    _images(folder / "test", [r["image"] for r in records])
    return folder
