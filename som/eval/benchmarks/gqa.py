"""GQA testdev-balanced as LLaVA-1.5 evaluates it (scripts/v1_5/eval/gqa.sh).

LLaVA answers `llava_gqa_testdev_balanced.jsonl` with model_vqa_loader (128 new tokens), turns
the answers into GQA's predictions file with scripts/convert_gqa_for_eval.py, and scores that
with GQA's own `eval.py --tier testdev_balanced`. Both steps are reproduced here:

* Conversion (`convert`): one `{"questionId": <question_id as in the answers>, "prediction":
  <text with trailing "." removed, then lower-cased>}` per answer line, in the answers' order,
  repeats kept, written as one JSON list with json.dump's default layout (", " and ": ",
  ASCII escapes, no newline at the end). Nothing else is normalised: no whitespace stripping, no
  article or number handling.
* Evaluation (`evaluate`): predictions are keyed by questionId (a later repeat replaces an
  earlier one); every balanced question of testdev_balanced_questions.json must have one, else
  the evaluator stops ("missing predictions"). Ids are compared with their JSON type: GQA's ids
  are strings, so a numeric questionId matches nothing. Over the balanced questions only, a
  prediction is right when it equals the question's `answer` exactly; `accuracy` is the mean in
  percent, `binary` and `open` the same over questions whose structural type is / is not
  "query" (open = "query"), per structural and per semantic type likewise, and `distribution`
  the chi-square of predicted vs gold answers per global group, summed weighted by group size,
  divided by 100 (lower is better), in the evaluator's own summation order. Validity and
  plausibility need the choices file, which GQA does not publish for testdev (the evaluator
  then prints 0.00%); they are not reported. Consistency and grounding are not computed
  (LLaVA does not ask for them).

Items (`GqaBenchmark.load_items(source)`), from LLaVA's `playground/data/eval/gqa/` or a flat
folder: `llava_gqa_testdev_balanced.jsonl` (the prompt is its `text`), images under `images/` or
`data/images/` (or the `images` folder/URL given), and optionally the answer key
`testdev_balanced_questions.json` at the top or under `data/` (or the `questions` file given).
With the key, `score` evaluates like eval.py; without it, `score` can only write the predictions
file (into `output_url`, the run's variant folder) and reports no headline.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from som.eval.benchmarks import FormatError, iter_jsonl, read_json, text_field

if TYPE_CHECKING:
    from som.eval.items import EvalItem, Source
    from som.eval.judge import Judge

log = logging.getLogger(__name__)

TIER = "testdev_balanced"
LLAVA_QUESTIONS = "llava_gqa_testdev_balanced.jsonl"
QUESTIONS_FILE = f"{TIER}_questions.json"
PREDICTIONS_FILE = f"{TIER}_predictions.json"
"""What eval.py reads, written into the run's variant folder in convert_gqa_for_eval.py's layout."""
EVALUATOR = "cd gqa/data && python eval/eval.py --tier testdev_balanced (reads testdev_balanced_predictions.json)"

QuestionId = int | str


# --- conversion (scripts/convert_gqa_for_eval.py) ------------------------------------------------


def normalise(text: str) -> str:
    """convert_gqa_for_eval.py's only change to an answer: trailing dots off, then lower case."""
    return text.rstrip(".").lower()


def read_answers(path: str | Path) -> list[tuple[QuestionId, str]]:
    """(question_id with its JSON type, text) per line of LLaVA's answers JSONL, in file order."""
    answers = []
    for line, record in iter_jsonl(path):
        if "question_id" not in record:
            raise FormatError(path, "missing field 'question_id'", line)
        question_id = record["question_id"]
        if isinstance(question_id, bool) or not isinstance(question_id, (str, int)):
            raise FormatError(path, f"question_id must be a string or an integer, got {question_id!r}", line)
        answers.append((question_id, text_field(record, "text", path, line)))
    return answers


def convert(answers: Iterable[tuple[QuestionId, str]]) -> list[dict[str, Any]]:
    """The predictions list convert_gqa_for_eval.py builds (same order, repeats kept)."""
    return [{"questionId": question_id, "prediction": normalise(text)} for question_id, text in answers]


def predictions_bytes(predictions: Sequence[Mapping[str, Any]]) -> bytes:
    """The predictions file byte for byte as json.dump writes it there."""
    return json.dumps(list(predictions)).encode("utf-8")


def write_predictions(answers: str | Path, out: str) -> dict[str, Any]:
    """Convert LLaVA's answers into GQA's predictions file at `out` (path or URL), atomically."""
    from som import storage

    predictions = convert(read_answers(answers))
    storage.write_bytes_atomic(out, predictions_bytes(predictions))
    log.info("wrote %d GQA predictions to %s", len(predictions), out)
    return {
        "benchmark": "gqa",
        "written": out,
        "predictions": len(predictions),
        "evaluate": f"name it {PREDICTIONS_FILE} and run: {EVALUATOR}, or: som eval score gqa "
        f"--questions {QUESTIONS_FILE} --predictions {out}",
    }


def read_predictions(path: str | Path) -> dict[QuestionId, str]:
    """A predictions file ([{"questionId", "prediction"}, ...]) keyed as eval.py keys it (last wins)."""
    data = read_json(path)
    if not isinstance(data, list):
        raise FormatError(path, "expected a JSON list of {questionId, prediction} objects")
    predictions: dict[QuestionId, str] = {}
    for number, record in enumerate(data, start=1):
        if not isinstance(record, dict) or "questionId" not in record or not isinstance(record.get("prediction"), str):
            raise FormatError(path, f'entry {number}: expected {{"questionId": ..., "prediction": "..."}}')
        question_id = record["questionId"]
        if isinstance(question_id, bool) or not isinstance(question_id, (str, int)):
            raise FormatError(path, f"entry {number}: questionId must be a string or an integer")
        predictions[question_id] = record["prediction"]
    return predictions


# --- evaluation (GQA's eval.py, testdev_balanced) ------------------------------------------------


@dataclass(frozen=True)
class GqaQuestion:
    """What eval.py reads from one question of the answer key."""

    answer: str
    structural: str
    semantic: str
    group: str | None
    balanced: bool


def _gqa_question(qid: str, record: Any, path: str | Path) -> GqaQuestion:
    try:
        question = GqaQuestion(
            answer=record["answer"],
            structural=record["types"]["structural"],
            semantic=record["types"]["semantic"],
            group=record["groups"]["global"],
            balanced=record["isBalanced"],
        )
    except (KeyError, TypeError):
        raise FormatError(
            path, f"question {qid}: expected answer, isBalanced, types.structural, types.semantic and groups.global"
        ) from None
    if not isinstance(question.answer, str) or not isinstance(question.balanced, bool):
        raise FormatError(path, f"question {qid}: answer must be a string and isBalanced a boolean")
    return question


def load_gqa_questions(path: str | Path) -> dict[str, GqaQuestion]:
    """testdev_balanced_questions.json ({question_id: question}) in the file's order."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise FormatError(path, f"expected GQA's {QUESTIONS_FILE}: an object of questions keyed by id")
    return {qid: _gqa_question(qid, record, path) for qid, record in data.items()}


@dataclass(frozen=True)
class GqaScores:
    """eval.py's numbers (percent, distribution as it prints it) plus what was left unscored."""

    accuracy: float
    binary: float
    open: float
    distribution: float | None
    per_structural_type: dict[str, dict[str, float | int]]
    per_semantic_type: dict[str, dict[str, float | int]]
    questions: int
    unanswered: int
    unanswered_ids: list[str]
    numeric_ids: int

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": "gqa", "tier": TIER, **asdict(self), "validity": None, "plausibility": None}


def _mean_percent(scores: Sequence[float]) -> float:
    """eval.py's avg() * 100 (0 for an empty list)."""
    return float(sum(scores)) / len(scores) * 100 if scores else 0.0


def _chi_square(gold: Mapping[str, Mapping[str, int]], predicted: Mapping[str, Mapping[str, int]]) -> float | None:
    total_score, total = 0.0, 0
    for group, answers in gold.items():
        score, overall = 0.0, 0
        for answer, expected in answers.items():
            observed = predicted[group].get(answer, 0)
            score += float(observed - expected) ** 2 / expected
            overall += expected
        total_score += score * overall
        total += overall
    return float(total_score) / total if total else None


def evaluate(
    questions: Mapping[str, GqaQuestion],
    predictions: Mapping[QuestionId, str],
    *,
    allow_partial: bool = False,
    where: str | Path = "predictions",
) -> GqaScores:
    """eval.py over `questions` (in their file order). A balanced question without a prediction
    is an error naming it, as in eval.py; with `allow_partial` it is left out and counted."""
    numeric = sum(isinstance(key, int) and str(key) in questions for key in predictions)
    missing = [qid for qid, q in questions.items() if q.balanced and qid not in predictions]
    if missing and not allow_partial:
        hint = f"; {numeric} predictions have a numeric questionId, GQA's ids are strings" if numeric else ""
        raise FormatError(
            where,
            f"no prediction for {len(missing)} balanced questions (e.g. {missing[:3]}), "
            f"GQA's eval.py stops on this too{hint}; pass --allow-partial to score the rest",
        )
    accuracy: list[float] = []
    kinds: dict[str, list[float]] = {"binary": [], "open": []}
    structural: dict[str, list[float]] = defaultdict(list)
    semantic: dict[str, list[float]] = defaultdict(list)
    gold: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    predicted: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for qid, question in questions.items():
        if not question.balanced or qid not in predictions:
            continue
        prediction = predictions[qid]
        score = float(prediction == question.answer)
        accuracy.append(score)
        structural[question.structural].append(score)
        semantic[question.semantic].append(score)
        kinds["open" if question.structural == "query" else "binary"].append(score)
        if question.group is not None:
            gold[question.group][question.answer] += 1
            predicted[question.group][prediction] += 1
    chi = _chi_square(gold, predicted)
    return GqaScores(
        accuracy=_mean_percent(accuracy),
        binary=_mean_percent(kinds["binary"]),
        open=_mean_percent(kinds["open"]),
        distribution=chi / 100 if chi is not None else None,
        per_structural_type={
            t: {"accuracy": _mean_percent(s), "questions": len(s)} for t, s in sorted(structural.items())
        },
        per_semantic_type={t: {"accuracy": _mean_percent(s), "questions": len(s)} for t, s in sorted(semantic.items())},
        questions=len(accuracy),
        unanswered=len(missing),
        unanswered_ids=missing[:20],
        numeric_ids=numeric,
    )


def score_gqa_files(
    questions: str | Path,
    *,
    answers: str | Path | None = None,
    predictions: str | Path | None = None,
    allow_partial: bool = False,
) -> GqaScores:
    """Score LLaVA's answers (converted as convert_gqa_for_eval.py does) or a predictions file."""
    if (answers is None) == (predictions is None):
        raise ValueError("give either answers (LLaVA's answers JSONL) or predictions (GQA's predictions JSON)")
    if answers is not None:
        keyed = {p["questionId"]: p["prediction"] for p in convert(read_answers(answers))}
        where: str | Path = answers
    else:
        assert predictions is not None
        keyed, where = read_predictions(predictions), predictions
    return evaluate(load_gqa_questions(questions), keyed, allow_partial=allow_partial, where=where)


# --- items ------------------------------------------------------------------------------------


def _first(src: Source, *candidates: str) -> str | None:
    return next((c for c in candidates if src.exists(c)), None)


@dataclass(frozen=True)
class GqaBenchmark:
    """GQA testdev-balanced for the runner; headline: eval.py's accuracy (%), when the answer key is there.

    Arguments:
    images: folder/URL of the GQA images (default: `images/` or `data/images/` in the source).
    questions: path/URL of testdev_balanced_questions.json (default: in the source or its `data/`).
    """

    name: str = "gqa"
    needs_judge: bool = False
    max_new_tokens: int = 128
    images: str | None = None
    questions: str | None = None

    def load_items(self, source: str, *, limit: int | None = None) -> list[EvalItem]:
        from som import storage
        from som.eval.items import EvalItem, Source, check_unique, take

        src = Source(source)
        path = src.local(LLAVA_QUESTIONS)
        image_root = self.images or src.url_of(_first(src, "images", "data/images") or "images")
        key = self._answer_key(src)
        items = []
        for line, record in iter_jsonl(path):
            qid = str(record.get("question_id", ""))
            if not qid:
                raise FormatError(path, "missing field 'question_id'", line)
            meta: dict[str, Any] = {}
            if key is not None:
                if qid not in key:
                    raise FormatError(path, f"question {qid} is not in {QUESTIONS_FILE}", line)
                position, question = key[qid]
                meta = {**asdict(question), "position": position}
            items.append(
                EvalItem(
                    id=qid,
                    prompt=text_field(record, "text", path, line),
                    image=storage.join(image_root, text_field(record, "image", path, line)),
                    meta=meta,
                )
            )
        check_unique(items, str(path))
        return take(items, limit)

    def _answer_key(self, src: Source) -> dict[str, tuple[int, GqaQuestion]] | None:
        """qid -> (position in the key file, question); positions keep eval.py's summation order."""
        from som.eval.items import Source

        if self.questions is not None:
            url = self.questions.rstrip("/")
            folder, _, name = url.rpartition("/")
            path = Source(folder or ".").local(name)
        else:
            found = _first(src, QUESTIONS_FILE, f"data/{QUESTIONS_FILE}")
            if found is None:
                return None
            path = src.local(*found.split("/"))
        return {qid: (i, q) for i, (qid, q) in enumerate(load_gqa_questions(path).items())}

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
        """eval.py's scores over the items when they carry the answer key, else headline None.

        `output_url`: a folder (the runner gives the run's `<run>/eval/gqa/<variant>/`) where
        the predictions file is also written as PREDICTIONS_FILE (convert_gqa_for_eval.py's
        output for these answers, in item order).
        """
        from som import storage
        from som.eval.items import answers_for

        answered = answers_for(items, answers, allow_partial=allow_partial, benchmark=self.name)
        predictions = convert((item.id, answered[item.id]) for item in items if item.id in answered)
        result: dict[str, Any] = {"benchmark": "gqa", "tier": TIER, "predictions_file": None}
        submission_url = storage.join(output_url, PREDICTIONS_FILE) if output_url is not None else None
        if submission_url is not None:
            storage.write_bytes_atomic(submission_url, predictions_bytes(predictions))
            result["predictions_file"] = submission_url
        if not items or "answer" not in items[0].meta:
            where = submission_url or "nowhere (no output_url given)"
            log.warning("gqa: no %s in the source, so no accuracy; predictions written to %s", QUESTIONS_FILE, where)
            return {
                **result,
                "headline": None,
                "submission_only": True,
                "note": f"no {QUESTIONS_FILE} in the source: predictions written to {where}; score them "
                f"with GQA's eval.py or `som eval score gqa`",
            }
        ordered = sorted(items, key=lambda item: int(item.meta["position"]))
        questions = {
            item.id: GqaQuestion(
                answer=item.meta["answer"],
                structural=item.meta["structural"],
                semantic=item.meta["semantic"],
                group=item.meta["group"],
                balanced=bool(item.meta["balanced"]),
            )
            for item in ordered
        }
        keyed = {p["questionId"]: p["prediction"] for p in predictions}
        scores = evaluate(questions, keyed, allow_partial=allow_partial, where=self.name)
        return {**result, **scores.to_dict(), "headline": scores.accuracy}
