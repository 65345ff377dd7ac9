"""VQAv2: LLaVA's upload file for the test-dev server, and the official VQA accuracy on val.

Test-dev (what LLaVA-1.5 reports, via the EvalAI server): the model answers LLaVA's
`llava_vqav2_mscoco_test-dev2015.jsonl` (question + "\\nAnswer the question using a single word
or phrase.", images under `test2015/`, up to 128 new tokens: model_vqa_loader.py's default).
The upload is built exactly as convert_vqav2_for_submission.py builds it: one {"question_id",
"answer"} per question of the *whole* test split `llava_vqav2_mscoco_test2015.jsonl`, in that
file's order, the answer through EvalAI's processor, questions without an answer (all those
outside test-dev) with answer "", written with `json.dump`'s default formatting.

Val: the official annotation file `v2_mscoco_val2014_annotations.json` and question file
`v2_OpenEnded_mscoco_val2014_questions.json`. The answer that would be uploaded (EvalAI-processed
LLaVA answer, or an upload file's answer as it is) is scored by GT-Vision-Lab's vqaEval.py (see
vqa_answers.vqa_accuracy): accuracy overall, per answer type (yes/no, number, other) and per
question type, in percent, rounded to 2 places as its Python 2 `round` does. As vqaEval's
loadRes, every annotated question needs an answer (unless `allow_partial`: then the answered
ones are scored, as evaluate(quesIds) does, and the JSON counts the rest).

Deliberate differences, in error reporting only: unreadable answer lines and a question_id
answered twice with different texts are errors naming file and line (the converter skips the
first and keeps the last); answer ids may be JSON numbers or digit strings (the converter would
match only numbers and upload "" for the rest).

Items (`VQAv2Benchmark.load_items(source)`): with the two val files in the source, val items
(ids = question_id, images `val2014/COCO_val2014_<image_id:012d>.jpg`); else test-dev items from
LLaVA's file. `split` forces one. Test-dev is submission-only: the runner's score step writes
the upload (filled from `llava_vqav2_mscoco_test2015.jsonl` when the source has it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from som.eval.benchmarks import FormatError, read_json, require, text_field
from som.eval.benchmarks.vqa_answers import (
    LlavaQuestion,
    answers_by_integer_id,
    evalai_answer,
    integer_id,
    load_llava_questions,
    submission_only,
    summarize,
    vqa_accuracy,
    write_upload,
)

if TYPE_CHECKING:
    from som.eval.items import EvalItem
    from som.eval.judge import Judge

log = logging.getLogger(__name__)

TEST_DEV_FILE = "llava_vqav2_mscoco_test-dev2015.jsonl"
TEST_FILE = "llava_vqav2_mscoco_test2015.jsonl"
TEST_IMAGES = "test2015"
VAL_ANNOTATIONS_FILE = "v2_mscoco_val2014_annotations.json"
VAL_QUESTIONS_FILE = "v2_OpenEnded_mscoco_val2014_questions.json"
VAL_IMAGES = "val2014"
SHORT_ANSWER = "Answer the question using a single word or phrase."
UPLOAD_URL = "https://eval.ai/web/challenges/challenge-page/830/my-submission"
UPLOAD_NAME = "vqav2_test-dev_upload.json"
SPLITS = ("val", "test-dev")


def upload_records(test_questions: Sequence[LlavaQuestion], answers: Mapping[int, str]) -> list[dict[str, Any]]:
    """convert_vqav2_for_submission.py's list: every test question, "" where unanswered."""
    return [
        {
            "question_id": q.question_id,
            "answer": evalai_answer(answers[q.question_id]) if q.question_id in answers else "",
        }
        for q in test_questions
    ]


def write_submission(
    questions: str | Path,
    answers: str | Path,
    out: str | Path,
    *,
    split_questions: str | Path | None = None,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """Write the upload for LLaVA answers; `questions` is the whole test2015 file, and
    `split_questions` (e.g. the test-dev file) the questions that must all be answered
    ("complete" in the summary is None when that was not checked)."""
    test = load_llava_questions(questions)
    by_id = answers_by_integer_id(answers)
    known = {q.question_id for q in test}
    strays = [key for key in by_id if key not in known]
    if strays:
        log.warning(
            "%s: %d answers to question_ids not in %s are left out (e.g. %s)",
            answers,
            len(strays),
            questions,
            strays[:3],
        )
    missing: list[int] = []
    if split_questions is not None:
        missing = [q.question_id for q in load_llava_questions(split_questions) if q.question_id not in by_id]
        if missing and not allow_partial:
            raise FormatError(
                answers,
                f"{len(missing)} questions of {split_questions} have no answer (e.g. "
                f"question_id {missing[0]}); pass --allow-partial to upload them as ''",
            )
    records = upload_records(test, by_id)
    target = write_upload(out, records)
    answered = sum(q.question_id in by_id for q in test)
    return {
        "benchmark": "vqav2",
        "upload_file": target,
        "upload_url": UPLOAD_URL,
        "questions": len(test),
        "answered": answered,
        "filled_empty": len(test) - answered,
        "ignored_answers": len(strays),
        "split_missing": len(missing),
        "split_missing_ids": missing[:20],
        "complete": not missing if split_questions is not None else None,
    }


@dataclass(frozen=True)
class VqaAnnotation:
    """One val annotation: its answer records (compared whole, as vqaEval does) and types."""

    question_id: int
    image_id: int
    answers: tuple[dict[str, Any], ...]
    answer_type: str
    question_type: str


def load_annotations(path: str | Path) -> list[VqaAnnotation]:
    """The official annotation file, in file order (the order vqaEval sums in)."""
    data = read_json(path)
    records = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise FormatError(path, "expected VQA's annotation file: an object with an 'annotations' list")
    out = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise FormatError(path, f"annotations[{index}] is not an object")
        answers = require(record, "answers", path, None)
        if (
            not isinstance(answers, list)
            or not answers
            or not all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers)
        ):
            raise FormatError(path, f"annotations[{index}]: 'answers' must be a list of answer records")
        out.append(
            VqaAnnotation(
                integer_id(require(record, "question_id", path, None), path, None),
                integer_id(require(record, "image_id", path, None), path, None),
                tuple(answers),
                text_field(record, "answer_type", path, None),
                text_field(record, "question_type", path, None),
            )
        )
    return out


def load_val_questions(path: str | Path) -> dict[int, str]:
    """question_id -> question text from the official question file."""
    data = read_json(path)
    records = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise FormatError(path, "expected VQA's question file: an object with a 'questions' list")
    return {
        integer_id(require(r, "question_id", path, None), path, None): text_field(r, "question", path, None)
        for r in records
    }


def score_vqav2(
    annotations: Sequence[VqaAnnotation],
    answers: Mapping[int, str],
    *,
    allow_partial: bool = False,
    where: str | Path = "answers",
) -> dict[str, Any]:
    """vqaEval's accuracy of `answers` (question_id -> answer as uploaded)."""
    known = {a.question_id for a in annotations}
    strays = [qid for qid in answers if qid not in known]
    if strays:
        raise FormatError(where, f"{len(strays)} answers are to question_ids without annotation, e.g. {strays[:3]}")
    missing = [a.question_id for a in annotations if a.question_id not in answers]
    if missing and not allow_partial:
        raise FormatError(
            where,
            f"{len(missing)} of {len(annotations)} annotated questions have no answer (e.g. "
            f"question_id {missing[0]}); pass --allow-partial to score the answered ones",
        )
    rows = [
        (vqa_accuracy(answers[a.question_id], a.answers), a.answer_type, a.question_type)
        for a in annotations
        if a.question_id in answers
    ]
    accuracy = summarize(rows, python2_rounding=True)
    return {
        "benchmark": "vqav2",
        "split": "val",
        "accuracy": accuracy.overall,
        "exact_accuracy": accuracy.exact_overall,
        "per_answer_type": accuracy.per_answer_type,
        "per_question_type": accuracy.per_question_type,
        "questions": len(annotations),
        "answered": len(rows),
        "unanswered": len(missing),
        "unanswered_ids": missing[:20],
    }


def _uploaded_answers(answers: str | Path) -> dict[int, str]:
    """question_id -> the answer as uploaded: an upload file's as is, LLaVA answers processed."""
    if Path(answers).suffix != ".json":
        return {key: evalai_answer(text) for key, text in answers_by_integer_id(answers).items()}
    data = read_json(answers)
    if not isinstance(data, list) or not all(isinstance(r, dict) and isinstance(r.get("answer"), str) for r in data):
        raise FormatError(answers, "expected an upload file: a JSON list of {question_id, answer}")
    return {integer_id(require(r, "question_id", answers, None), answers, None): r["answer"] for r in data}


def score_vqav2_files(
    annotations: str | Path, answers: str | Path, *, questions: str | Path | None = None, allow_partial: bool = False
) -> dict[str, Any]:
    """`som eval score vqav2`: official VQA accuracy of an answers file (LLaVA JSONL or upload
    JSON) on val; `questions`, when given, must list exactly the annotated questions."""
    records = load_annotations(annotations)
    if questions is not None:
        asked = set(load_val_questions(questions))
        if asked != {a.question_id for a in records}:
            raise FormatError(questions, f"does not hold the question_ids of {annotations}")
    return score_vqav2(records, _uploaded_answers(answers), allow_partial=allow_partial, where=answers)


# --- items ----------------------------------------------------------------------------------


def val_image(image_id: int) -> str:
    """COCO's file name of a val2014 image."""
    return f"COCO_val2014_{image_id:012d}.jpg"


@dataclass(frozen=True)
class VQAv2Benchmark:
    """VQAv2 for the runner: val accuracy when the source has the val files, else the
    test-dev upload (submission-only).

    Arguments:
    images: folder/URL of the images (default: `<source>/test2015` or `<source>/val2014`).
    split: "val" or "test-dev"; default: val when the source has both val files.
    """

    name: str = "vqav2"
    needs_judge: bool = False
    max_new_tokens: int = 128
    images: str | None = None
    split: str | None = None

    def load_items(self, source: str, *, limit: int | None = None) -> list[EvalItem]:
        from som import storage
        from som.eval.items import EvalItem, Source, take

        src = Source(source)
        split = self.split or (
            "val" if src.exists(VAL_ANNOTATIONS_FILE) and src.exists(VAL_QUESTIONS_FILE) else "test-dev"
        )
        if split not in SPLITS:
            raise ValueError(f"vqav2: split must be one of {SPLITS}, got {split!r}")
        if split == "val":
            image_root = self.images or src.url_of(VAL_IMAGES)
            texts = load_val_questions(src.local(VAL_QUESTIONS_FILE))
            items = []
            for a in load_annotations(src.local(VAL_ANNOTATIONS_FILE)):
                if a.question_id not in texts:
                    raise FormatError(src.url_of(VAL_QUESTIONS_FILE), f"question_id {a.question_id} is missing")
                items.append(
                    EvalItem(
                        id=str(a.question_id),
                        prompt=f"{texts[a.question_id]}\n{SHORT_ANSWER}",
                        image=storage.join(image_root, val_image(a.image_id)),
                        meta={
                            "split": "val",
                            "answers": [dict(r) for r in a.answers],
                            "answer_type": a.answer_type,
                            "question_type": a.question_type,
                        },
                    )
                )
            return take(items, limit)
        image_root = self.images or src.url_of(TEST_IMAGES)
        test_file = src.url_of(TEST_FILE) if src.exists(TEST_FILE) else None
        items = [
            EvalItem(
                id=str(q.question_id),
                prompt=q.text,
                image=storage.join(image_root, q.image),
                meta={"split": "test-dev", "test_questions": test_file},
            )
            for q in load_llava_questions(src.local(TEST_DEV_FILE))
        ]
        return take(items, limit)

    def score(
        self,
        items: list[EvalItem],
        answers: dict[str, str],
        *,
        judge: Judge | None = None,
        cache_url: str | None = None,
        allow_partial: bool = False,
        output_url: str | None = None,
    ) -> dict[str, Any]:
        """Val: accuracy (headline). Test-dev: the upload file written to `output_url` (a folder),
        headline None, since only the server knows the answers."""
        from som.eval.items import answers_for

        answered = answers_for(items, answers, allow_partial=allow_partial, benchmark=self.name)
        if items and items[0].meta.get("split") == "val":
            annotations = [
                VqaAnnotation(
                    int(item.id), 0, tuple(item.meta["answers"]), item.meta["answer_type"], item.meta["question_type"]
                )
                for item in items
            ]
            uploaded = {int(key): evalai_answer(text) for key, text in answered.items()}
            scores = score_vqav2(annotations, uploaded, allow_partial=True, where="<items>")
            return {**scores, "headline": scores["accuracy"]}
        by_id = {int(key): text for key, text in answered.items()}
        result = submission_only(
            self.name,
            items,
            answered,
            output_url,
            UPLOAD_NAME,
            UPLOAD_URL,
            lambda: upload_records(_test_questions(items), by_id),
        )
        return {**result, "filled_from": items[0].meta.get("test_questions") if items else None}


def _test_questions(items: Sequence[EvalItem]) -> list[LlavaQuestion]:
    """The whole test2015 question list the upload must cover, or (when the source lacks that
    file) just the items' questions, with a warning: the server expects every test2015 id."""
    url = items[0].meta.get("test_questions") if items else None
    if url is None:
        log.warning("vqav2: no %s in the source; the upload holds only the test-dev questions", TEST_FILE)
        return [LlavaQuestion(int(item.id), "", item.prompt, index) for index, item in enumerate(items, start=1)]
    from som.eval.items import Source

    folder, _, name = url.rpartition("/")
    return load_llava_questions(Source(folder).local(name))
