"""ScienceQA-IMG scored like LLaVA's eval_science_qa.py (prompts as model_vqa_science.py).

Official (LLaVA) semantics, reproduced rule for rule:

* The scored problems are `pid_splits.json[split]` (default "test", 4241 problems) looked up in
  `problems.json` ({pid: {"choices": [...], "answer": <index>, ...}}), in the split's order.
* An answer's letter (`parse_answer`): the whole text when it is one of A-E; else the first
  character when the text is at least 3 long and continues with ". "; else the letter of
  "The answer is X." when that pattern (with any character where the dot is) occurs exactly
  once; else "FAILED". A letter beyond the problem's choices, or FAILED, is index -1 (wrong).
  eval_science_qa.py has a `random.choice` fallback for that case, but it sits after a `return
  -1` and never runs, so scoring is deterministic and nothing random is reproduced here.
* A problem without an answer counts as FAILED (wrong), and its prompt is "Unknown".
* A problem counts as an image question when its answer's `prompt` contains "<image>" (what
  model_vqa_science.py writes for questions with an image); unanswered problems therefore never
  count as image questions, as in the official script. Accuracies are in percent: `accuracy`
  over all problems, `img_accuracy` (ScienceQA-IMG, the number LLaVA-1.5 reports) over the
  image ones.
* Answers are matched by question_id as given: LLaVA writes the problem ids as strings ("4"),
  and an integer id (4) matches no problem, as in the official dict lookup.
  `unmatched_answers` / `id_type_mismatches` count such answers, with a warning.

somflow refuses (FormatError/ValueError) where the official script would silently go on: a
malformed line, a second, different answer to one id (the official dict keeps the last), and
unanswered problems unless `allow_partial`, in which case they are scored as FAILED, exactly
as the official script does, and the result lists them (`unanswered`, `missing`).

`write_llava_files` writes LLaVA's `--output-file` (correct/incorrect per-question analysis)
and `--output-result` (acc, correct, count, results, outputs) byte for byte as the script does.

Items (`SqaBenchmark.load_items(source)`), from LLaVA's `playground/data/eval/scienceqa/` layout:
`llava_test_CQM-A.json` (questions), `problems.json` and `pid_splits.json` (answers; from the
ScienceQA repo's data/scienceqa) and `images/test/<pid>/image.png`. The prompt is what the model
gets from model_vqa_science.py with `--single-pred-prompt` (scripts/v1_5/eval/sqa.sh): the
question text without "<image>", stripped, then "\\n" and the letter instruction. The profile
(som.eval.profiles) puts "<image>\\n" in front for questions with an image; text-only questions
have no image. Generation length is the script's 1024 tokens.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from som.eval.benchmarks import FormatError, iter_jsonl, read_json
from som.eval.benchmarks.seed import PROMPT_SUFFIX

if TYPE_CHECKING:
    from som.eval.items import EvalItem
    from som.eval.judge import Judge

log = logging.getLogger(__name__)

OPTIONS: tuple[str, ...] = ("A", "B", "C", "D", "E")
"""eval_science_qa.py's `--options` default."""
FAILED = "FAILED"
UNKNOWN_PROMPT = "Unknown"
"""The prompt eval_science_qa.py records for an unanswered problem."""
IMAGE_TOKEN = "<image>"
QUESTION_FILE = "llava_test_CQM-A.json"
PROBLEMS_FILE = "problems.json"
SPLITS_FILE = "pid_splits.json"
IMAGE_FOLDER = ("images", "test")
MAX_NEW_TOKENS = 1024
"""model_vqa_science.py generates up to 1024 tokens."""

_STATED_ANSWER = re.compile(r"The answer is ([A-Z]).")


@dataclass(frozen=True)
class SqaProblem:
    """What scoring needs from one problems.json entry: its id, answer index and choice count."""

    id: str
    answer: int
    num_choices: int


@dataclass(frozen=True)
class SqaAnswer:
    """One model answer: its text and the prompt LLaVA recorded with it."""

    text: str
    prompt: str


@dataclass(frozen=True)
class SqaScores:
    """Accuracies in percent plus LLaVA's two result documents (`output`, `result`)."""

    split: str
    accuracy: float
    correct: int
    count: int
    img_accuracy: float | None
    img_correct: int
    img_count: int
    failed: int
    missing: list[str]
    unmatched_answers: int = 0
    id_type_mismatches: int = 0
    output: dict[str, Any] = field(default_factory=dict, repr=False)
    result: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def summary_line(self) -> str:
        """The line eval_science_qa.py prints."""
        img = f"{self.img_accuracy:.2f}%" if self.img_accuracy is not None else "n/a"
        return f"Total: {self.count}, Correct: {self.correct}, Accuracy: {self.accuracy:.2f}%, IMG-Accuracy: {img}"

    def to_dict(self) -> dict[str, object]:
        return {
            "benchmark": "sqa",
            "split": self.split,
            "accuracy": self.accuracy,
            "img_accuracy": self.img_accuracy,
            "correct": self.correct,
            "count": self.count,
            "img_correct": self.img_correct,
            "img_count": self.img_count,
            "failed": self.failed,
            "unanswered": len(self.missing),
            "missing": self.missing[:20],
            "unmatched_answers": self.unmatched_answers,
            "id_type_mismatches": self.id_type_mismatches,
            "official_line": self.summary_line,
        }


def parse_answer(text: str) -> str:
    """The answer letter eval_science_qa.py reads from a model's text, or "FAILED"."""
    if text in OPTIONS:
        return text
    if len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        return text[0]
    found = _STATED_ANSWER.findall(text)
    return found[0] if len(found) == 1 else FAILED


def choice_index(letter: str, num_choices: int) -> int:
    """The choice index of `letter`, or -1 when it is not among the problem's choices."""
    letters = OPTIONS[:num_choices]
    return letters.index(letter) if letter in letters else -1


def sqa_prompt(question: str) -> str:
    """The text model_vqa_science.py (--single-pred-prompt) gives the model after the image."""
    return question.replace(IMAGE_TOKEN, "").strip() + "\n" + PROMPT_SUFFIX


def recorded_prompt(prompt: str, has_image: bool) -> str:
    """The `prompt` model_vqa_science.py writes with an answer (`cur_prompt`): "<image>\\n" in
    front for a question with an image, which is how eval_science_qa.py tells them apart."""
    return f"{IMAGE_TOKEN}\n{prompt}" if has_image else prompt


# --- reading ---------------------------------------------------------------------------------


def load_problems(base_dir: str | Path, split: str = "test") -> list[SqaProblem]:
    """The problems of `split`, in pid_splits.json's order, from problems.json beside it."""
    base = Path(base_dir)
    splits = read_json(base / SPLITS_FILE)
    if not isinstance(splits, dict) or split not in splits:
        known = ", ".join(sorted(splits)) if isinstance(splits, dict) else "none"
        raise FormatError(base / SPLITS_FILE, f"no split {split!r} (splits: {known})")
    problems = read_json(base / PROBLEMS_FILE)
    if not isinstance(problems, dict):
        raise FormatError(base / PROBLEMS_FILE, "expected a JSON object {problem id: problem}")
    out = []
    for pid in splits[split]:
        record = problems.get(pid)
        if not isinstance(record, dict):
            raise FormatError(base / PROBLEMS_FILE, f"problem {pid!r} of split {split!r} is missing")
        choices, answer = record.get("choices"), record.get("answer")
        if not isinstance(choices, list) or not isinstance(answer, int) or isinstance(answer, bool):
            raise FormatError(base / PROBLEMS_FILE, f"problem {pid!r}: needs a 'choices' list and an integer 'answer'")
        if not 0 <= answer < len(OPTIONS):
            raise FormatError(base / PROBLEMS_FILE, f"problem {pid!r}: answer {answer} is not an option index")
        out.append(SqaProblem(str(pid), answer, len(choices)))
    return out


def load_question_prompts(path: str | Path) -> dict[str, str]:
    """{question id: the prompt model_vqa_science.py records} for LLaVA's question file."""
    return {q["id"]: recorded_prompt(sqa_prompt(q["question"]), q["image"] is not None) for q in _questions(path)}


def _questions(path: str | Path) -> list[dict[str, Any]]:
    """id, question text (first human turn) and image (None: text only) per question."""
    data = read_json(path)
    if not isinstance(data, list):
        raise FormatError(path, "expected a JSON list of LLaVA conversation records")
    out = []
    for number, record in enumerate(data):
        if not isinstance(record, dict) or "id" not in record:
            raise FormatError(path, f"record #{number}: expected an object with an 'id'")
        turns = record.get("conversations")
        first = turns[0] if isinstance(turns, list) and turns else None
        if not isinstance(first, dict) or not isinstance(first.get("value"), str):
            raise FormatError(path, f"question {record['id']}: needs a first conversation turn with a 'value'")
        image = record.get("image")
        if image is not None and not isinstance(image, str):
            raise FormatError(path, f"question {record['id']}: 'image' must be a file name")
        out.append({"id": str(record["id"]), "question": first["value"], "image": image})
    return out


def load_sqa_answers(path: str | Path, prompts: Mapping[str, str] | None = None) -> dict[Any, SqaAnswer]:
    """Answers keyed by their question_id as written (str or int, as the official lookup).

    Lines are LLaVA's (`question_id`, `text`, `prompt`) or somflow's (`id`, `answer`); a line
    without `prompt` takes it from `prompts` (see `load_question_prompts`)."""
    answers: dict[Any, SqaAnswer] = {}
    for line, record in iter_jsonl(path):
        key = record.get("question_id", record.get("id"))
        text = record.get("text", record.get("answer"))
        if isinstance(key, bool) or not isinstance(key, (str, int)) or not isinstance(text, str):
            raise FormatError(path, "expected question_id (string) and text (or id and answer)", line)
        prompt = record.get("prompt")
        if prompt is None and prompts is not None:
            prompt = prompts.get(str(key))
        if not isinstance(prompt, str):
            raise FormatError(
                path,
                f"answer to {key!r} has no 'prompt' (it says whether the question has an "
                "image); pass LLaVA's question file to rebuild it",
                line,
            )
        answer = SqaAnswer(text, prompt)
        if key in answers and answers[key] != answer:
            raise FormatError(path, f"second, different answer to question_id {key!r}", line)
        answers[key] = answer
    return answers


# --- scoring ---------------------------------------------------------------------------------


def score_sqa(
    problems: Sequence[SqaProblem],
    answers: Mapping[Any, SqaAnswer],
    *,
    split: str = "test",
    allow_partial: bool = False,
) -> SqaScores:
    """eval_science_qa.py over `problems`; unanswered ones are an error unless `allow_partial`."""
    if not problems:
        raise ValueError("no problems to score")
    missing = [p.id for p in problems if p.id not in answers]
    if missing and not allow_partial:
        raise ValueError(
            f"sqa: {len(missing)} of {len(problems)} problems have no answer (e.g. {missing[:3]}); "
            "pass allow_partial to score them as FAILED, as eval_science_qa.py does"
        )
    if missing:
        log.warning("sqa: %d of %d problems have no answer; scored as FAILED", len(missing), len(problems))
    output: dict[str, list[dict[str, Any]]] = {"correct": [], "incorrect": []}
    results: dict[str, int] = {}
    outputs: dict[str, str] = {}
    failed = 0
    for problem in problems:
        answer = answers.get(problem.id, SqaAnswer(FAILED, UNKNOWN_PROMPT))
        letter = parse_answer(answer.text)
        failed += letter == FAILED
        index = choice_index(letter, problem.num_choices)
        output["correct" if index == problem.answer else "incorrect"].append(
            {
                "question_id": problem.id,
                "parsed_ans": letter,
                "ground_truth": OPTIONS[problem.answer],
                "question": answer.prompt,
                "pred": answer.text,
                "is_multimodal": IMAGE_TOKEN in answer.prompt,
            }
        )
        results[problem.id] = index
        outputs[problem.id] = answer.text
    correct, count = len(output["correct"]), len(problems)
    img_correct = sum(r["is_multimodal"] for r in output["correct"])
    img_count = img_correct + sum(r["is_multimodal"] for r in output["incorrect"])
    accuracy = correct / count * 100
    return SqaScores(
        split=split,
        accuracy=accuracy,
        correct=correct,
        count=count,
        img_accuracy=img_correct / img_count * 100 if img_count else None,
        img_correct=img_correct,
        img_count=img_count,
        failed=failed,
        missing=missing,
        output=output,
        result={"acc": accuracy, "correct": correct, "count": count, "results": results, "outputs": outputs},
    )


def score_sqa_files(
    base_dir: str | Path,
    answers: str | Path,
    *,
    split: str = "test",
    questions: str | Path | None = None,
    allow_partial: bool = False,
) -> SqaScores:
    """Score a LLaVA answers JSONL against `base_dir`'s problems.json / pid_splits.json.

    `questions` (LLaVA's llava_test_CQM-A.json) supplies the prompt of answer lines that lack
    one (somflow's own answer files)."""
    problems = load_problems(base_dir, split)
    prompts = load_question_prompts(questions) if questions is not None else None
    read = load_sqa_answers(answers, prompts)
    known = {p.id for p in problems}
    unmatched = [key for key in read if key not in known]
    type_mismatches = sum(str(key) in known for key in unmatched)
    if type_mismatches:
        log.warning(
            "%d answers in %s have an integer question_id; eval_science_qa.py looks problems up by "
            "their string id, so they count as unanswered (write ids as JSON strings)",
            type_mismatches,
            answers,
        )
    elif unmatched:
        log.warning("%d answers in %s are for problems not in split %r", len(unmatched), answers, split)
    try:
        scores = score_sqa(problems, read, split=split, allow_partial=allow_partial)
    except ValueError as exc:
        raise FormatError(answers, str(exc)) from None
    log.info("%s", scores.summary_line)
    return replace(scores, unmatched_answers=len(unmatched), id_type_mismatches=type_mismatches)


def write_llava_files(
    scores: SqaScores, output_file: str | Path | None = None, output_result: str | Path | None = None
) -> None:
    """LLaVA's --output-file and --output-result, written as eval_science_qa.py writes them."""
    for path, document in ((output_file, scores.output), (output_result, scores.result)):
        if path is not None:
            Path(path).write_text(json.dumps(document, indent=2), encoding="utf-8")


# --- items -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SqaBenchmark:
    """ScienceQA-IMG for the runner; headline is the image-question accuracy (LLaVA's SQA-IMG).

    Arguments:
    split: which pid_splits.json split to evaluate (LLaVA: "test").
    images: folder/URL of the split's images (default: `<source>/images/test`).
    """

    name: str = "sqa"
    needs_judge: bool = False
    max_new_tokens: int = MAX_NEW_TOKENS
    split: str = "test"
    images: str | None = None

    def load_items(self, source: str, *, limit: int | None = None) -> list[EvalItem]:
        from som import storage
        from som.eval.items import EvalItem, Source, check_unique, take

        src = Source(source)
        questions = src.local(QUESTION_FILE)
        src.local(SPLITS_FILE)
        problems = {p.id: p for p in load_problems(src.local(PROBLEMS_FILE).parent, self.split)}
        image_root = self.images or src.url_of(*IMAGE_FOLDER)
        items = []
        for question in _questions(questions):
            problem = problems.get(question["id"])
            if problem is None:
                continue
            image = question["image"]
            items.append(
                EvalItem(
                    id=problem.id,
                    prompt=sqa_prompt(question["question"]),
                    image=storage.join(image_root, image) if image is not None else None,
                    meta={"answer": problem.answer, "num_choices": problem.num_choices},
                )
            )
        check_unique(items, str(questions))
        if len(items) < len(problems):
            log.warning(
                "%s: %d problems of split %r have no question in %s; they are not asked (the official "
                "script would score them as FAILED)",
                source,
                len(problems) - len(items),
                self.split,
                QUESTION_FILE,
            )
        return take(items, limit)

    def score(
        self,
        items: list[EvalItem],
        answers: dict[str, str],
        *,
        judge: Judge | None = None,
        cache_url: str | None = None,
        allow_partial: bool = False,
    ) -> dict[str, object]:
        """Scores as eval_science_qa.py gives them for LLaVA answer files of these items."""
        from som.eval.items import answers_for

        answered = answers_for(items, answers, allow_partial=allow_partial, benchmark=self.name)
        problems = [SqaProblem(item.id, int(item.meta["answer"]), int(item.meta["num_choices"])) for item in items]
        recorded = {
            item.id: SqaAnswer(answered[item.id], recorded_prompt(item.prompt, item.image is not None))
            for item in items
            if item.id in answered
        }
        scores = score_sqa(problems, recorded, split=self.split, allow_partial=allow_partial)
        return {**scores.to_dict(), "headline": scores.img_accuracy}
