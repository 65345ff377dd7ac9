"""VizWiz-VQA: LLaVA's upload file for the test server, and VQA accuracy on val.

Test (what LLaVA-1.5 reports, via the EvalAI server): `llava_test.jsonl` holds the questions
(question_id, image, text = question + UNANSWERABLE_HINT + SHORT_ANSWER); the model answers
with up to 128 new tokens (model_vqa_loader.py's default). The upload is built exactly as
convert_vizwiz_for_submission.py builds it: one {"image", "answer"} per question in
question-file order, the answer through EvalAI's processor (so "Unanswerable" -> "unanswerable":
the only "unanswerable handling" is the prompt's hint plus lower-casing), every question must
be answered, written with `json.dump`'s default formatting. On LLaVA's own answers this is byte
for byte LLaVA's committed upload file.

Val (answers known): VizWiz's `val.json` (a list of {"image", "question", "answers": [10 x
{"answer", "answer_confidence"}], "answer_type", "answerable"}). The answer that would be
uploaded (EvalAI-processed) is scored by VizWiz's evaluator (see vqa_answers.vizwiz_accuracy),
overall and per answer type, percent rounded to 2 places as Python 3 rounds. LLaVA numbers its
question files by position in the annotation list (question_id i <-> VizWiz_<split>_<i:08d>.jpg),
so LLaVA-style answers to val are matched the same way unless a question file says otherwise.

Deliberate differences, in error reporting only: unreadable answer lines and a question_id
answered twice with different texts are errors naming file and line (the converter skips the
first and keeps the last); with `allow_partial` the upload leaves out unanswered questions and
says which (the converter stops at the first).

Items (`VizWizBenchmark.load_items(source)`): with `val.json` in the source, val items (ids are
positions, prompt = question + the two suffixes, images under `val/`); else the test items of
`llava_test.jsonl` (images under `test/`). `split` forces one.
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
    load_llava_questions,
    submission_only,
    summarize,
    vizwiz_accuracy,
    write_upload,
)

if TYPE_CHECKING:
    from som.eval.items import EvalItem
    from som.eval.judge import Judge

log = logging.getLogger(__name__)

QUESTIONS_FILE = "llava_test.jsonl"
ANNOTATIONS_FILE = "val.json"
IMAGE_FOLDERS = {"test": "test", "val": "val"}
UNANSWERABLE_HINT = "When the provided information is insufficient, respond with 'Unanswerable'."
SHORT_ANSWER = "Answer the question using a single word or phrase."
UPLOAD_URL = "https://eval.ai/web/challenges/challenge-page/2185/my-submission"
UPLOAD_NAME = "vizwiz_test_upload.json"


@dataclass(frozen=True)
class VizWizAnnotation:
    """One val.json record: what scoring needs."""

    image: str
    question: str
    answers: tuple[str, ...]
    answer_type: str


def upload_records(
    questions: Sequence[LlavaQuestion],
    answers: Mapping[int, str],
    *,
    allow_partial: bool = False,
    where: str | Path = "answers",
) -> tuple[list[dict[str, str]], list[int]]:
    """convert_vizwiz_for_submission.py's list, and the question_ids left out (unanswered)."""
    missing = [q.question_id for q in questions if q.question_id not in answers]
    if missing and not allow_partial:
        raise FormatError(
            where,
            f"{len(missing)} of {len(questions)} questions have no answer (e.g. question_id "
            f"{missing[0]}); the server needs them all: pass --allow-partial to write the rest",
        )
    records = [
        {"image": q.image, "answer": evalai_answer(answers[q.question_id])}
        for q in questions
        if q.question_id in answers
    ]
    return records, missing


def _submission_summary(
    out: str, records: list[dict[str, str]], questions: int, missing: list[int], strays: int
) -> dict[str, Any]:
    return {
        "benchmark": "vizwiz",
        "split": "test",
        "upload_file": out,
        "upload_url": UPLOAD_URL,
        "questions": questions,
        "answered": len(records),
        "missing": len(missing),
        "missing_ids": missing[:20],
        "ignored_answers": strays,
        "complete": not missing,
    }


def write_submission(
    questions: str | Path, answers: str | Path, out: str | Path, *, allow_partial: bool = False
) -> dict[str, Any]:
    """Write the test-server upload for LLaVA answers; returns where it went and what it holds."""
    question_list = load_llava_questions(questions)
    by_id = answers_by_integer_id(answers)
    known = {q.question_id for q in question_list}
    strays = sum(key not in known for key in by_id)
    if strays:
        log.warning("%s: %d answers to question_ids not in %s are left out", answers, strays, questions)
    records, missing = upload_records(question_list, by_id, allow_partial=allow_partial, where=answers)
    target = write_upload(out, records)
    return _submission_summary(target, records, len(question_list), missing, strays)


def load_annotations(path: str | Path) -> list[VizWizAnnotation]:
    """VizWiz's val.json (or train.json): a list of annotated questions."""
    data = read_json(path)
    if not isinstance(data, list):
        raise FormatError(path, "expected VizWiz's annotation list ([{image, question, answers, answer_type}])")
    out = []
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise FormatError(path, f"record {index} is not an object")
        answers = require(record, "answers", path, None)
        if (
            not isinstance(answers, list)
            or not all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers)
            or not answers
        ):
            raise FormatError(
                path,
                f"record {index} ({record.get('image')}): 'answers' must be a list of {{answer, answer_confidence}}",
            )
        out.append(
            VizWizAnnotation(
                text_field(record, "image", path, None),
                text_field(record, "question", path, None),
                tuple(a["answer"] for a in answers),
                text_field(record, "answer_type", path, None),
            )
        )
    return out


def score_vizwiz(
    annotations: Sequence[VizWizAnnotation],
    answers: Mapping[str, str],
    *,
    allow_partial: bool = False,
    where: str | Path = "answers",
) -> dict[str, Any]:
    """VQA accuracy of `answers` (image name -> raw model answer) on annotated questions."""
    known = {a.image for a in annotations}
    strays = [image for image in answers if image not in known]
    if strays:
        raise FormatError(where, f"{len(strays)} answers are to images without annotation, e.g. {strays[:3]}")
    missing = [a.image for a in annotations if a.image not in answers]
    if missing and not allow_partial:
        raise FormatError(
            where,
            f"{len(missing)} of {len(annotations)} annotated questions have no answer (e.g. "
            f"{missing[0]}); pass --allow-partial to score the answered ones",
        )
    rows = [
        (vizwiz_accuracy(evalai_answer(answers[a.image]), a.answers), a.answer_type, None)
        for a in annotations
        if a.image in answers
    ]
    accuracy = summarize(rows, python2_rounding=False)
    return {
        "benchmark": "vizwiz",
        "split": "val",
        "accuracy": accuracy.overall,
        "exact_accuracy": accuracy.exact_overall,
        "per_answer_type": accuracy.per_answer_type,
        "questions": len(annotations),
        "answered": len(rows),
        "unanswered": len(missing),
        "unanswered_images": missing[:20],
    }


def _answers_by_image(
    answers: str | Path, annotations: Sequence[VizWizAnnotation], questions: str | Path | None
) -> dict[str, str]:
    """Answers keyed by image: from an upload file ({"image", "answer"} list), or LLaVA answers
    whose question_ids a question file maps to images (default: position in `annotations`)."""
    if Path(answers).suffix == ".json":
        data = read_json(answers)
        if not isinstance(data, list) or not all(
            isinstance(r, dict) and isinstance(r.get("image"), str) and isinstance(r.get("answer"), str) for r in data
        ):
            raise FormatError(answers, "expected an upload file: a JSON list of {image, answer}")
        return {r["image"]: r["answer"] for r in data}
    if questions is not None:
        images = {q.question_id: q.image for q in load_llava_questions(questions)}
    else:
        images = dict(enumerate(a.image for a in annotations))
    by_id = answers_by_integer_id(answers)
    unknown = [key for key in by_id if key not in images]
    if unknown:
        raise FormatError(
            answers,
            f"{len(unknown)} question_ids have no image (e.g. {unknown[:3]}); "
            f"{'are the questions from this split?' if questions else 'pass the question file (--questions)'}",
        )
    return {images[key]: text for key, text in by_id.items()}


def score_vizwiz_files(
    annotations: str | Path, answers: str | Path, *, questions: str | Path | None = None, allow_partial: bool = False
) -> dict[str, Any]:
    """`som eval score vizwiz`: VQA accuracy of an answers file on VizWiz val."""
    records = load_annotations(annotations)
    return score_vizwiz(
        records, _answers_by_image(answers, records, questions), allow_partial=allow_partial, where=answers
    )


# --- items ----------------------------------------------------------------------------------


def val_prompt(question: str) -> str:
    """The prompt of llava_test.jsonl's lines, for a val question."""
    return f"{question}\n{UNANSWERABLE_HINT}\n{SHORT_ANSWER}"


@dataclass(frozen=True)
class VizWizBenchmark:
    """VizWiz for the runner: val accuracy when the source has val.json, else the test upload.

    Arguments:
    images: folder/URL of the images (default: `<source>/test` or `<source>/val`).
    split: "val" or "test"; default: val when the source has val.json.
    """

    name: str = "vizwiz"
    needs_judge: bool = False
    max_new_tokens: int = 128
    images: str | None = None
    split: str | None = None

    def load_items(self, source: str, *, limit: int | None = None) -> list[EvalItem]:
        from som import storage
        from som.eval.items import EvalItem, Source, take

        src = Source(source)
        split = self.split or ("val" if src.exists(ANNOTATIONS_FILE) else "test")
        if split not in IMAGE_FOLDERS:
            raise ValueError(f"vizwiz: split must be 'val' or 'test', got {split!r}")
        image_root = self.images or src.url_of(IMAGE_FOLDERS[split])
        if split == "val":
            items = [
                EvalItem(
                    id=str(index),
                    prompt=val_prompt(a.question),
                    image=storage.join(image_root, a.image),
                    meta={
                        "split": "val",
                        "image_name": a.image,
                        "answers": list(a.answers),
                        "answer_type": a.answer_type,
                    },
                )
                for index, a in enumerate(load_annotations(src.local(ANNOTATIONS_FILE)))
            ]
        else:
            items = [
                EvalItem(
                    id=str(q.question_id),
                    prompt=q.text,
                    image=storage.join(image_root, q.image),
                    meta={"split": "test", "image_name": q.image},
                )
                for q in load_llava_questions(src.local(QUESTIONS_FILE))
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
        """Val: accuracy (headline). Test: the upload file written to `output_url` (a folder),
        headline None, since only the server knows the answers."""
        from som.eval.items import answers_for

        answered = answers_for(items, answers, allow_partial=allow_partial, benchmark=self.name)
        if items and items[0].meta.get("split") == "val":
            annotations = [
                VizWizAnnotation(item.meta["image_name"], "", tuple(item.meta["answers"]), item.meta["answer_type"])
                for item in items
            ]
            by_image = {item.meta["image_name"]: answered[item.id] for item in items if item.id in answered}
            scores = score_vizwiz(annotations, by_image, allow_partial=True, where="<items>")
            return {**scores, "headline": scores["accuracy"]}
        return submission_only(
            self.name,
            items,
            answered,
            output_url,
            UPLOAD_NAME,
            UPLOAD_URL,
            lambda: upload_records(
                [
                    LlavaQuestion(int(item.id), item.meta["image_name"], item.prompt, index)
                    for index, item in enumerate(items, start=1)
                ],
                {int(key): text for key, text in answered.items()},
                allow_partial=True,
            )[0],
        )
