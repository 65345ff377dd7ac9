"""Small ScienceQA and MMBench source folders in LLaVA's published layouts, from ../shared/reference.

ScienceQA: the real question, problem and split files cut to a few questions, with generated
images under the names the questions use. MMBench: the dev TSV itself is not in the reference
folder, so `mmbench_rows` rebuilds its rows from LLaVA's upload xlsx (index, question, options,
answer, split) and LLaVA's answers file (the hint: the recorded prompt minus question and
options); category and l2-category, which neither file holds, are made up, and the images are
generated. MMBench-CN sources reuse those rows under the CN file name (no CN reference is
shipped), which is enough to check the layout and the Chinese instruction.
"""

from __future__ import annotations

import base64
import csv
import json
from functools import lru_cache
from pathlib import Path

from som.eval.benchmarks.mmbench import CIRCULAR_STRIDE, LETTERS, TSV_FILES
from tests.helpers.eval_sources import REFERENCE, small_image

SQA = REFERENCE / "sqa"
MMBENCH = REFERENCE / "mmbench"
MMBENCH_UPLOAD = MMBENCH / "upload_dev_20230712_llava-v1.5-13b.xlsx"
MMBENCH_ANSWERS = MMBENCH / "answers_dev_20230712_llava-v1.5-13b.jsonl"
TSV_COLUMNS = (
    "index",
    "question",
    "hint",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "image",
    "source",
    "l2-category",
    "comment",
    "split",
)
"""The official MMBench dev TSV's columns, in its order."""
CATEGORIES = ("image_scene", "object_localization", "ocr", "future_prediction", "social_relation")
L2_CATEGORIES = ("coarse_perception", "finegrained_perception (instance-level)", "logic_reasoning")


def sqa_source(folder: Path, n: int = 4) -> Path:
    """LLaVA's scienceqa layout for the first `n` test questions: llava_test_CQM-A.json,
    problems.json, pid_splits.json ({"test": ids}) and images/test/<pid>/image.png."""
    questions = json.loads((SQA / "llava_test_CQM-A.json").read_text())[:n]
    problems = json.loads((SQA / "base" / "problems.json").read_text())
    ids = [q["id"] for q in questions]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "llava_test_CQM-A.json").write_text(json.dumps(questions, indent=2))
    (folder / "problems.json").write_text(json.dumps({pid: problems[pid] for pid in ids}, indent=2))
    (folder / "pid_splits.json").write_text(json.dumps({"test": ids}))
    for number, question in enumerate(questions):
        if "image" in question:
            path = folder / "images" / "test" / question["image"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(small_image(number))
    return folder


def _hint(prompt: str, question: str, options: list[str]) -> str:
    """The hint in LLaVA's recorded prompt ("nan" when there is none, as the TSV has it)."""
    body = question + "".join(f"\n{letter}. {option}" for letter, option in zip(LETTERS, options, strict=False))
    if prompt == body:
        return "nan"
    if not prompt.endswith("\n" + body):
        raise AssertionError(f"recorded prompt does not end with question and options: {prompt[-200:]!r}")
    return prompt[: -len(body) - 1]


@lru_cache(maxsize=1)
def _reference_rows() -> tuple[dict[str, str], ...]:
    from openpyxl import load_workbook

    prompts = {}
    with MMBENCH_ANSWERS.open() as lines:
        for line in lines:
            record = json.loads(line)
            prompts[record["question_id"]] = record["prompt"]
    sheet = load_workbook(MMBENCH_UPLOAD, read_only=True).active
    header, *values = [list(row) for row in sheet.iter_rows(values_only=True)]
    rows = []
    for cells in values:
        upload = dict(zip(header, cells, strict=False))
        index = int(upload["index"])
        options = []
        for letter in LETTERS:
            if upload[letter] is None:
                break
            options.append(upload[letter])
        group = index % CIRCULAR_STRIDE
        rows.append(
            {
                "index": str(index),
                "question": upload["question"],
                "hint": _hint(prompts[index], upload["question"], options),
                **{letter: upload[letter] or "" for letter in LETTERS},
                "answer": upload["answer"],
                "category": CATEGORIES[group % len(CATEGORIES)],
                "image": "",
                "source": "reference-rebuilt",
                "l2-category": L2_CATEGORIES[group % len(L2_CATEGORIES)],
                "comment": "",
                "split": upload["split"],
            }
        )
    return tuple(rows)


def mmbench_rows(n: int | None = None) -> list[dict[str, str]]:
    """Dev TSV rows rebuilt from the reference (see the module docstring), in TSV order: the
    first `n` original questions (all when None) and their circular copies; image empty."""
    rows = [dict(row) for row in _reference_rows()]
    if n is None:
        return rows
    keep = set([int(row["index"]) for row in rows if int(row["index"]) < CIRCULAR_STRIDE][:n])
    return [row for row in rows if int(row["index"]) % CIRCULAR_STRIDE in keep]


def write_mmbench_tsv(path: Path, rows: list[dict[str, str]]) -> Path:
    """The rows as an official-layout TSV; rows with an empty image get a generated one (the
    same for all copies of a question)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(TSV_COLUMNS)
        for row in rows:
            image = row["image"] or base64.b64encode(small_image(int(row["index"]) % CIRCULAR_STRIDE % 97)).decode()
            writer.writerow([image if column == "image" else row[column] for column in TSV_COLUMNS])
    return path


def mmbench_source(folder: Path, n: int = 4, lang: str = "en") -> Path:
    """LLaVA's mmbench (or mmbench_cn) layout: the dev TSV, under LLaVA's file name for `lang`,
    with the first `n` questions and their circular copies."""
    write_mmbench_tsv(folder / TSV_FILES[lang], mmbench_rows(n))
    return folder
