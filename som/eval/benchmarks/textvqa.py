"""TextVQA (val) scored exactly as LLaVA's eval_textvqa.py with m4c's TextVQAAccuracyEvaluator.

Official (LLaVA) semantics, reproduced:

* The question file `llava_textvqa_val_v051_ocr.jsonl` gives each question's prompt (question,
  "Reference OCR token: ..." line, short-answer instruction); its question_id is the *image* id,
  shared by the questions on one image. The model answers with up to 128 new tokens
  (model_vqa_loader.py's default; textvqa.sh sets none).
* eval_textvqa.py finds each answer's annotation in `TextVQA_0.5.1_val.json` by (question_id,
  question), the question recovered from the answer's prompt by `prompt_question` (three prompt
  layouts, see there) and lower-cased, the annotation's question lower-cased too; when two
  annotations share that key the later one wins.
* Every answer *line* is scored (a repeated line counts twice), with m4c's soft score
  (vqa_answers.m4c_accuracy: EvalAI-processed answers, 10 human answers required);
  accuracy = mean over the lines, reported in percent (`accuracy`; eval_textvqa prints it with
  two decimals, `accuracy_printed`).

Deliberate differences, in error reporting only: an answer without annotation or a prompt in
no known layout is a FormatError naming the answer line (the script dies with a KeyError or an
AssertionError); unanswered questions (those of `--questions`, else every annotation) are an
error unless `allow_partial`, which the script does not check. Answer lines without `prompt`
take it from the question file, which must then hold that question_id once.

Items (`TextVQABenchmark.load_items(source)`), from LLaVA's `playground/data/eval/textvqa`
layout: the question file, `TextVQA_0.5.1_val.json` (needed: it holds the answers and the
questions' own ids, which become item ids as the image ids repeat) and `train_images/`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from som.eval.benchmarks import FormatError, iter_jsonl, read_json, require, text_field
from som.eval.benchmarks.vqa_answers import AnswerLine, m4c_accuracy, read_answer_lines

if TYPE_CHECKING:
    from som.eval.items import EvalItem
    from som.eval.judge import Judge

log = logging.getLogger(__name__)

QUESTIONS_FILE = "llava_textvqa_val_v051_ocr.jsonl"
ANNOTATIONS_FILE = "TextVQA_0.5.1_val.json"
IMAGE_FOLDER = "train_images"

_OCR_TOKENS_QUESTION = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)

Key = tuple[str, str]
"""(image id = LLaVA's question_id, lower-cased question): how answers meet annotations."""


def prompt_question(prompt: str) -> str:
    """eval_textvqa.py's prompt_processor: the lower-cased question inside a prompt.

    "OCR tokens: ... Question: <q> Short answer:" -> <q>; a three-line prompt with a
    "Reference OCR token: " line -> the first line (the second when the prompt starts with that
    line); a two-line prompt -> its first line. Anything else raises ValueError."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        match = _OCR_TOKENS_QUESTION.search(prompt)
        if match is None:
            raise ValueError("prompt starts with 'OCR tokens: ' but has no 'Question: ... Short answer:'")
        question = match.group(1)
    elif "Reference OCR token: " in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith("Reference OCR token:") else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(f"prompt has {len(lines)} lines and none of eval_textvqa.py's layouts")
    return question.lower()


@dataclass(frozen=True)
class TextVqaAnnotation:
    """One record of TextVQA_0.5.1_val.json: what scoring needs."""

    question_id: str
    image_id: str
    question: str
    answers: tuple[str, ...]


def load_annotations(path: str | Path) -> dict[Key, TextVqaAnnotation]:
    """Annotations keyed as eval_textvqa.py keys them (a later record replaces an earlier one)."""
    data = read_json(path)
    records = data.get("data") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise FormatError(path, "expected TextVQA's annotation file: an object with a 'data' list")
    out: dict[Key, TextVqaAnnotation] = {}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise FormatError(path, f"data[{index}] is not an object")
        answers = require(record, "answers", path, None)
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise FormatError(path, f"data[{index}]: 'answers' must be a list of strings")
        image_id, question = text_field(record, "image_id", path, None), text_field(record, "question", path, None)
        annotation = TextVqaAnnotation(
            str(require(record, "question_id", path, None)), image_id, question, tuple(answers)
        )
        out[(image_id, question.lower())] = annotation
    return out


def _key(question_id: int | str, prompt: str, path: str | Path, line: int) -> Key:
    try:
        return (str(question_id), prompt_question(prompt))
    except ValueError as exc:
        raise FormatError(path, str(exc), line) from None


def _score(annotation: TextVqaAnnotation, answer: str, where: str | Path) -> float:
    try:
        return m4c_accuracy(answer, annotation.answers)
    except ValueError as exc:
        raise FormatError(where, f"question_id {annotation.question_id}: {exc}") from None


def score_textvqa(
    results: Sequence[AnswerLine],
    annotations: Mapping[Key, TextVqaAnnotation],
    *,
    expected: set[Key] | None = None,
    allow_partial: bool = False,
    answers_path: str | Path = "answers",
    annotations_path: str | Path = "annotations",
) -> dict[str, Any]:
    """Accuracy of answer lines whose `prompt` is set; `expected` are the keys that need an
    answer (default: every annotation)."""
    scores = []
    answered: set[Key] = set()
    for result in results:
        if result.prompt is None:
            raise FormatError(answers_path, "answer has no 'prompt' to find its question by", result.line)
        key = _key(result.question_id, result.prompt, answers_path, result.line)
        if key not in annotations:
            raise FormatError(
                answers_path,
                f"no annotation for question {key[1]!r} on image {key[0]} in {annotations_path}",
                result.line,
            )
        answered.add(key)
        scores.append(_score(annotations[key], result.text, annotations_path))
    wanted = set(annotations) if expected is None else expected
    missing = sorted(wanted - answered)
    if missing and not allow_partial:
        raise FormatError(
            answers_path,
            f"{len(missing)} of {len(wanted)} questions have no answer (e.g. {missing[0]}); "
            "pass --allow-partial to score the answered ones",
        )
    if not scores:
        raise FormatError(answers_path, "no answer to score")
    accuracy = 100.0 * (sum(scores) / len(scores))
    return {
        "benchmark": "textvqa",
        "accuracy": accuracy,
        "accuracy_printed": f"{accuracy:.2f}",
        "samples": len(scores),
        "questions": len(wanted),
        "unanswered": len(missing),
        "unanswered_questions": [list(key) for key in missing[:20]],
    }


def load_questions(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """LLaVA's question file as (line, record), each with string question_id, image and text."""
    out = []
    for line, record in iter_jsonl(path):
        for key in ("question_id", "image", "text"):
            text_field(record, key, path, line)
        out.append((line, record))
    return out


def _with_prompts(results: list[AnswerLine], questions: str | Path | None, answers: str | Path) -> list[AnswerLine]:
    """Answer lines, those without `prompt` given their question's text from the question file."""
    lacking = [r for r in results if r.prompt is None]
    if not lacking:
        return results
    if questions is None:
        raise FormatError(
            answers,
            "answer lines have no 'prompt' (needed to find the question): pass the question file (--questions)",
            lacking[0].line,
        )
    texts: dict[str, list[str]] = {}
    for _, record in load_questions(questions):
        texts.setdefault(record["question_id"], []).append(record["text"])
    out = []
    for result in results:
        if result.prompt is None:
            found = texts.get(str(result.question_id), [])
            if len(found) != 1:
                raise FormatError(
                    answers,
                    f"question_id {result.question_id} is in {questions} {len(found)} times; "
                    "the answer line needs its 'prompt'",
                    result.line,
                )
            result = AnswerLine(result.line, result.question_id, result.text, found[0])
        out.append(result)
    return out


def score_textvqa_files(
    annotations: str | Path, answers: str | Path, *, questions: str | Path | None = None, allow_partial: bool = False
) -> dict[str, Any]:
    """`som eval score textvqa`: eval_textvqa.py's accuracy of an answers file."""
    records = load_annotations(annotations)
    results = _with_prompts(read_answer_lines(answers), questions, answers)
    expected = None
    if questions is not None:
        expected = {_key(r["question_id"], r["text"], questions, line) for line, r in load_questions(questions)}
    return score_textvqa(
        results,
        records,
        expected=expected,
        allow_partial=allow_partial,
        answers_path=answers,
        annotations_path=annotations,
    )


# --- items ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextVQABenchmark:
    """TextVQA val for the runner; headline: accuracy in percent, as eval_textvqa.py.

    Arguments:
    images: folder/URL of the TextVQA train/val images (default: `<source>/train_images`).
    """

    name: str = "textvqa"
    needs_judge: bool = False
    max_new_tokens: int = 128
    images: str | None = None

    def load_items(self, source: str, *, limit: int | None = None) -> list[EvalItem]:
        from som import storage
        from som.eval.items import EvalItem, Source, check_unique, take

        src = Source(source)
        if not src.exists(ANNOTATIONS_FILE):
            raise FormatError(src.url, f"no {ANNOTATIONS_FILE}: TextVQA items need it for their answers and ids")
        annotations_path, questions_path = src.local(ANNOTATIONS_FILE), src.local(QUESTIONS_FILE)
        annotations = load_annotations(annotations_path)
        image_root = self.images or src.url_of(IMAGE_FOLDER)
        items = []
        for line, record in load_questions(questions_path):
            key = _key(record["question_id"], record["text"], questions_path, line)
            if key not in annotations:
                raise FormatError(
                    questions_path,
                    f"no annotation for question {key[1]!r} on image {key[0]} in {annotations_path}",
                    line,
                )
            annotation = annotations[key]
            items.append(
                EvalItem(
                    id=annotation.question_id,
                    prompt=record["text"],
                    image=storage.join(image_root, record["image"]),
                    meta={"image_id": key[0], "question": key[1], "answers": list(annotation.answers)},
                )
            )
        check_unique(items, str(questions_path))
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
        from som.eval.items import answers_for

        answered = answers_for(items, answers, allow_partial=allow_partial, benchmark=self.name)
        results = [
            AnswerLine(index, item.meta["image_id"], answered[item.id], item.prompt)
            for index, item in enumerate(items, start=1)
            if item.id in answered
        ]
        annotations = {
            (item.meta["image_id"], item.meta["question"]): TextVqaAnnotation(
                item.id, item.meta["image_id"], item.meta["question"], tuple(item.meta["answers"])
            )
            for item in items
        }
        scores = score_textvqa(
            results, annotations, allow_partial=True, answers_path="<answers>", annotations_path="<items>"
        )
        return {**scores, "headline": scores["accuracy"]}
