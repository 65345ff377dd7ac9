"""Answer normalisation and the VQA soft accuracy, as the official evaluators compute them.

TextVQA, VQAv2 and VizWiz are all scored by "how many of the 10 human answers agree", after
normalising the answers. Three official codes do this, each with its own quirks, and each
benchmark must give its own evaluator's number, so each is reproduced separately here:

* `evalai_answer`: EvalAI's answer processor, as LLaVA's m4c_evaluator.EvalAIAnswerProcessor
  (used by eval_textvqa.py and by the VQAv2/VizWiz upload converters). Steps, in order:
  lower-case, drop "," and "?", split off "'s" (-> " 's"), strip; newlines/tabs to spaces, strip;
  `punctuation`; `digits_and_articles`.
* `m4c_accuracy` (TextVQA, m4c's TextVQAAccuracyEvaluator): both sides through
  `evalai_answer`; the score of an answer is the mean over the 10 leave-one-out subsets (by
  position) of min(1, matches / 3).
* `vqa_accuracy` (VQAv2, GT-Vision-Lab/VQA vqaEval.py at a013f00): newlines/tabs to spaces and
  strip on both sides; only when the human answers are not all identical are both sides put
  through `punctuation(..., VQA_COMMA)` + `digits_and_articles` (so with unanimous humans the
  raw, case-sensitive answer must match exactly); leave-one-out drops every human answer
  *record* equal to the current one (`item != gtAnsDatum` on the dicts; VQAv2's answer_id
  makes each record distinct).
* `vizwiz_accuracy` (VizWiz's own VQAEval, the evaluator behind the VizWiz server): the model
  answer always goes through `punctuation` + `digits_and_articles`, the human answers never do;
  leave-one-out by position. (GT-Vision-Lab's dict comparison would drop identical VizWiz answer
  records together, as they carry no answer_id, and score a unanimous question 0.)

Quirks kept on purpose: the period pattern of both codes, "(?!<=\\d)(\\.)(?!\\d)", is meant as
a look-behind but is a look-ahead that never fires, so it removes every "." not followed by a
digit; and both pass re.UNICODE (32) as `count`, so at most the first 32 such periods go. The
comma test differs: EvalAI's pattern allows several commas between digits, vqaEval's one.
Tables below are the shared content of both codes (identical there), entries as published,
including the keys that can never match (capitalised ones, since words are lower-cased first).

Rounding: vqaEval.py is Python 2 code (round half away from zero, `round_half_away`); VizWiz's
evaluator is Python 3 (`round`, half to even on the exact binary value).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from som.eval.benchmarks import FormatError, iter_jsonl, require, text_field

if TYPE_CHECKING:
    from som.eval.items import EvalItem

log = logging.getLogger(__name__)

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
"""Word -> contraction (note "somebody'd" -> "somebodyd": the published table's own entry)."""

NUMBER_WORDS: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})
PUNCTUATION: tuple[str, ...] = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
"""Removed (or turned into a space); note "'", ":" and "." are not in it (periods: see below)."""

EVALAI_COMMA = re.compile(r"(?<=\d),+(?=\d)")
VQA_COMMA = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")
_PERIOD_LIMIT = int(re.UNICODE)
"""The official codes pass re.UNICODE as sub()'s count: at most 32 periods are removed."""


def punctuation(text: str, comma: re.Pattern[str] = EVALAI_COMMA) -> str:
    """processPunctuation: each mark is deleted when it touches a space anywhere in the text (or
    the text has digits around a comma), else replaced by a space; then periods not before a
    digit are deleted. Every test looks at the input text, never at the partly cleaned one."""
    out = text
    joined = comma.search(text) is not None
    for mark in PUNCTUATION:
        if joined or f"{mark} " in text or f" {mark}" in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_PERIOD_LIMIT)


def digits_and_articles(text: str) -> str:
    """processDigitArticle: lower-case, split on whitespace, number words to digits, articles
    dropped, then contractions restored; words joined by single spaces."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def evalai_answer(text: str) -> str:
    """EvalAI's answer processor (LLaVA's m4c_evaluator.EvalAIAnswerProcessor.__call__)."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return digits_and_articles(punctuation(text, EVALAI_COMMA))


def _soft(matches: int) -> float:
    return min(1, float(matches) / 3)


def m4c_answer_scores(human_answers: Sequence[str]) -> dict[str, float]:
    """Soft score of every distinct (processed) human answer, as m4c's _compute_answer_scores.

    Raises ValueError unless there are exactly 10 answers (m4c asserts it)."""
    processed = [evalai_answer(answer) for answer in human_answers]
    if len(processed) != 10:
        raise ValueError(f"TextVQA accuracy needs 10 human answers, got {len(processed)}")
    scores = {}
    for candidate in set(processed):
        accs = [
            _soft(sum(other == candidate for j, other in enumerate(processed) if j != i)) for i in range(len(processed))
        ]
        scores[candidate] = sum(accs) / len(accs)
    return scores


def m4c_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """TextVQA score (0-1) of one model answer."""
    return m4c_answer_scores(human_answers).get(evalai_answer(prediction), 0.0)


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_accuracy(prediction: str, human_answers: Sequence[Mapping[str, Any]]) -> float:
    """VQAv2 score (0-1) of one answer, as vqaEval.py; `human_answers` are the annotation's
    answer records ({"answer", "answer_confidence", "answer_id"}), compared whole when leaving
    one out."""
    records = [{**record, "answer": _clean(str(record["answer"]))} for record in human_answers]
    answer = _clean(prediction)
    if len({record["answer"] for record in records}) > 1:
        records = [
            {**record, "answer": digits_and_articles(punctuation(record["answer"], VQA_COMMA))} for record in records
        ]
        answer = digits_and_articles(punctuation(answer, VQA_COMMA))
    accs = [_soft(sum(other["answer"] == answer for other in records if other != record)) for record in records]
    return float(sum(accs)) / len(accs)


def vizwiz_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """VizWiz score (0-1) of one answer, as VizWiz's VQAEval (human answers taken as they are)."""
    answer = digits_and_articles(punctuation(_clean(prediction), VQA_COMMA))
    accs = [
        _soft(sum(other == answer for j, other in enumerate(human_answers) if j != i))
        for i in range(len(human_answers))
    ]
    return float(sum(accs)) / len(accs)


def round_half_away(value: float, digits: int = 2) -> float:
    """Python 2's round(): the exact binary value rounded, ties away from zero."""
    step = Decimal(1).scaleb(-digits)
    return float(Decimal(value).quantize(step, rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class VqaAccuracy:
    """Accuracy in percent, overall and per answer (and question) type, rounded as the
    evaluator rounds; `exact_overall` is the same number unrounded."""

    overall: float
    exact_overall: float
    per_answer_type: dict[str, float]
    per_question_type: dict[str, float] | None
    questions: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall,
            "exact_overall": self.exact_overall,
            "per_answer_type": self.per_answer_type,
            "per_question_type": self.per_question_type,
            "questions": self.questions,
        }


def summarize(
    scores: Iterable[tuple[float, str, str | None]], *, python2_rounding: bool, digits: int = 2
) -> VqaAccuracy:
    """setAccuracy: 100 * mean per group, in question order, rounded to `digits`.

    `scores` holds (score 0-1, answer type, question type or None) per question."""
    rounding = round_half_away if python2_rounding else round
    rows = list(scores)
    if not rows:
        raise ValueError("no question to score")
    accs = [acc for acc, _, _ in rows]
    by_answer: dict[str, list[float]] = {}
    by_question: dict[str, list[float]] = {}
    for acc, answer_type, question_type in rows:
        by_answer.setdefault(answer_type, []).append(acc)
        if question_type is not None:
            by_question.setdefault(question_type, []).append(acc)
    exact = 100 * float(sum(accs)) / len(accs)
    return VqaAccuracy(
        overall=rounding(exact, digits),
        exact_overall=exact,
        per_answer_type={k: rounding(100 * float(sum(v)) / len(v), digits) for k, v in by_answer.items()},
        per_question_type={k: rounding(100 * float(sum(v)) / len(v), digits) for k, v in by_question.items()}
        if by_question
        else None,
        questions=len(rows),
    )


# --- answer files and upload files shared by the three benchmarks ------------------------------


@dataclass(frozen=True)
class AnswerLine:
    """One line of LLaVA's answers JSONL (model_vqa_loader.py): question_id, text, prompt."""

    line: int
    question_id: int | str
    text: str
    prompt: str | None


def read_answer_lines(path: str | Path) -> list[AnswerLine]:
    """Every answer line in file order (eval_textvqa.py scores lines, not ids, so repeats stay)."""
    out = []
    for line, record in iter_jsonl(path):
        question_id = require(record, "question_id", path, line)
        if isinstance(question_id, bool) or not isinstance(question_id, (int, str)):
            raise FormatError(path, f"question_id must be a string or an integer, got {question_id!r}", line)
        prompt = record.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise FormatError(path, "field 'prompt' must be a string", line)
        out.append(AnswerLine(line, question_id, text_field(record, "text", path, line), prompt))
    return out


def integer_id(value: int | str, path: str | Path, line: int | None) -> int:
    """A VQAv2/VizWiz question_id as the integer LLaVA's files hold ("42" is taken as 42)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value)
    raise FormatError(path, f"question_id must be an integer, got {value!r}", line)


def answers_by_integer_id(path: str | Path) -> dict[int, str]:
    """LLaVA answers keyed by integer question_id; a repeat with another text is an error (the
    converters would silently keep the last)."""
    answers: dict[int, str] = {}
    for entry in read_answer_lines(path):
        key = integer_id(entry.question_id, path, entry.line)
        if key in answers and answers[key] != entry.text:
            raise FormatError(path, f"second, different answer to question_id {key}", entry.line)
        answers[key] = entry.text
    return answers


@dataclass(frozen=True)
class LlavaQuestion:
    """One line of LLaVA's VQAv2/VizWiz question files (question_id, image, text)."""

    question_id: int
    image: str
    text: str
    line: int


def load_llava_questions(path: str | Path) -> list[LlavaQuestion]:
    """LLaVA's question JSONL in file order; integer question_ids, each once."""
    questions = []
    seen: set[int] = set()
    for line, record in iter_jsonl(path):
        qid = integer_id(require(record, "question_id", path, line), path, line)
        if qid in seen:
            raise FormatError(path, f"question_id {qid} appears twice", line)
        seen.add(qid)
        questions.append(
            LlavaQuestion(qid, text_field(record, "image", path, line), text_field(record, "text", path, line), line)
        )
    return questions


def upload_bytes(records: list[dict[str, Any]]) -> bytes:
    """The converters' `json.dump(records, f)`: default separators, ASCII escapes."""
    return json.dumps(records).encode("ascii")


def write_upload(url: str | Path, records: list[dict[str, Any]]) -> str:
    """Write an upload file atomically (temp file, then rename); returns where it went."""
    from som import storage

    target = str(url)
    storage.write_bytes_atomic(target, upload_bytes(records))
    return target


def submission_only(
    benchmark: str,
    items: Sequence[EvalItem],
    answered: Mapping[str, str],
    output_url: str | None,
    file_name: str,
    upload_url: str,
    build: Callable[[], list[dict[str, Any]]],
) -> dict[str, Any]:
    """The runner's scores for a split only an evaluation server can score: where the upload
    file went (written to the folder `output_url` when given) and where to send it; headline None."""
    from som import storage

    result: dict[str, Any] = {
        "benchmark": benchmark,
        "submission_only": True,
        "headline": None,
        "upload_url": upload_url,
        "questions": len(items),
        "answered": len(answered),
        "complete": len(answered) == len(items),
        "upload_file": None,
    }
    if output_url is None:
        log.warning("%s: no output folder given, so no upload file was written", benchmark)
        return result
    result["upload_file"] = write_upload(storage.join(output_url, file_name), build())
    return result
