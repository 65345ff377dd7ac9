"""MME (14 yes/no subtasks, two questions per image) scored like the official eval_tool.

Semantics kept from MME's `eval_tool/calculation.py`:

* ground truth and response are lower-cased; a response that is exactly 'yes' or 'no' is that,
  else 'yes' anywhere in its first 4 characters means yes, else 'no' there means no, else it is
  "other" and counts as wrong;
* a task file is read as consecutive pairs of lines (one image each); acc = correct / questions,
  acc+ = images with both answers right / images; task score = 100*acc + 100*acc+;
* Perception = sum of the 10 perception task scores, Cognition = sum of the 4 cognition ones.

The eval_tool exchange format is one `<task>.txt` per task, tab separated:
image, question, ground truth, model response (the template `Your_Results/` has only the first
three columns). `read_results_dir` / `write_results_dir` read and write it, so a run can be
compared with any other tool that fills the same template.

`llava_rows` redoes LLaVA's `convert_answer_to_mme.py`: every answer line is converted from its
own question_id (task = first path part, image = last) and `prompt`: drop LLaVA's short-answer
instruction, append " Please answer yes or no." (or the double-spaced variant some MME
questions use) and look the question up in a ground truth folder. The image column takes the
name the ground truth uses: the image file name from an eval_tool folder, or, from the MME
release folder, the question file name (`<stem>.txt`) exactly as LLaVA writes it. The converter
never reads LLaVA's question file, so answers it lacks are scored too (LLaVA-1.5-13B's answers
hold 6 such lines: its published 1531.3 counts them); `--questions` only serves as a check
that every question was answered, and `MMEConversion` reports how many answers were outside it.

Where somflow differs: it raises `FormatError` (file and line) where the official script would
assert, crash or silently pair lines of two different images: an answer without ground truth
(the converter's KeyError; `skip_missing` leaves such answers out and counts them), a repeated
(question_id, prompt) line (the converter writes both, shifting calculation.py's pairs;
`allow_duplicates` keeps the last), an image without exactly two scorable answers. Rows are
grouped per image, so shuffled answer files score as intended. Scores of valid files are equal.

Copies in ../shared/reference/mme/ disagree with each other (details in tests/eval/test_mme.py):
the third-party LLaVA-1.5-7B run scores Perception 1508.67 / Cognition 355.71 (its own
MME_results.txt agrees), not the 1510.7 LLaVA publishes; its eval_tool scene file has 378 lines
where its question file has 396 and the MME template 400; the template copy in eval_tool/ lacks
two landmark images that both LLaVA runs answered (eval_tool_official/, from MME's eval_tool.zip,
has them).

Items (`MMEBenchmark.load_items(source)`), from the folder or URL of LLaVA's layout
(`playground/data/eval/MME/`) or of the MME release itself:

* questions: `llava_mme.jsonl` (LLaVA's prompts, already ending in LLAVA_SUFFIX) when present;
  otherwise every question of the release folder, its " Please answer yes or no." replaced by
  LLaVA's suffix on a new line, exactly as in llava_mme.jsonl;
* ground truth: `MME_Benchmark_release_version/` (`<task>/questions_answers_YN/<stem>.txt` +
  `<task>/images/`, or `<task>/<stem>.txt` + images beside them), `eval_tool/Your_Results/`
  (the template), or the source folder itself in either layout; questions the ground truth
  lacks are left out with a warning (the template copy misses two landmark images);
* images: `MME_Benchmark_release_version/<task>/...` (or the `images` folder/URL given).

Item ids are LLaVA's question_id (the image path, shared by its two questions) plus `#0` /
`#1` for the first and second question of the image. `MMEBenchmark.score` builds the eval_tool
rows and scores them with `score_task`; `eval_tool_rows` gives the rows for
`write_results_dir`, so a run can also be scored by the official calculation.py.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from som.eval.benchmarks import FormatError, iter_jsonl, require, text_field

if TYPE_CHECKING:
    from som.eval.items import EvalItem, Source
    from som.eval.judge import Judge

log = logging.getLogger(__name__)

PERCEPTION_TASKS: tuple[str, ...] = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
COGNITION_TASKS: tuple[str, ...] = (
    "commonsense_reasoning",
    "numerical_calculation",
    "text_translation",
    "code_reasoning",
)
TASKS: tuple[str, ...] = PERCEPTION_TASKS + COGNITION_TASKS

LLAVA_SUFFIX = "Answer the question using a single word or phrase."
MME_SUFFIX = " Please answer yes or no."


def parse_prediction(response: str) -> str:
    """'yes', 'no' or 'other' for a model response, by calculation.py's rule."""
    text = response.lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


@dataclass(frozen=True)
class MMERow:
    """One line of an eval_tool task file."""

    image: str
    question: str
    answer: str
    response: str


@dataclass(frozen=True)
class MMETaskScore:
    """Official per-task numbers; `score` = 100*acc + 100*acc_plus."""

    task: str
    questions: int
    images: int
    acc: float
    acc_plus: float
    other: int
    score: float


@dataclass(frozen=True)
class MMEScores:
    """Perception and Cognition sums plus every task's score."""

    perception: float
    cognition: float
    tasks: dict[str, MMETaskScore]

    def to_dict(self) -> dict[str, object]:
        return {
            "benchmark": "mme",
            "perception": self.perception,
            "cognition": self.cognition,
            "total": self.perception + self.cognition,
            "tasks": {name: asdict(task) for name, task in self.tasks.items()},
        }


# --- eval_tool text format ------------------------------------------------------------------


def read_task_file(path: str | Path, *, columns: int = 4) -> list[tuple[int, list[str]]]:
    """(line number, fields) for each non-blank line; `columns` is 4 for results, 3 for a template."""
    path = Path(path)
    try:
        # Universal newlines, as calculation.py's readlines(); not str.splitlines, which would
        # also break a response at characters such as U+2028.
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise FormatError(path, f"cannot open: {exc.strerror or exc}") from exc
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < columns:
            hint = " (a template without model responses?)" if len(fields) == 3 else ""
            raise FormatError(path, f"expected {columns} tab-separated fields, got {len(fields)}{hint}", number)
        if columns == 4 and len(fields) > 4:
            raise FormatError(
                path, f"expected 4 tab-separated fields, got {len(fields)}; responses must not contain tabs", number
            )
        rows.append((number, fields))
    return rows


def read_results_dir(directory: str | Path, tasks: Sequence[str] = TASKS) -> dict[str, list[MMERow]]:
    """Load `<task>.txt` for every task from an eval_tool results folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FormatError(directory, "not a folder (expected one <task>.txt per MME task)")
    results = {}
    for task in tasks:
        path = directory / f"{task}.txt"
        if not path.is_file():
            raise FormatError(path, f"missing: MME results need one file per task ({', '.join(tasks)})")
        rows = []
        for number, fields in read_task_file(path):
            image, question, answer, response = fields
            if answer.lower() not in ("yes", "no"):
                raise FormatError(path, f"ground truth must be Yes or No, got {answer!r}", number)
            rows.append(MMERow(image, question, answer, response))
        results[task] = rows
    return results


def _one_line(text: str) -> str:
    """A response fit for one tab-separated line; replacing keeps every character's position."""
    return text.replace("\r\n", "  ").replace("\r", " ").replace("\n", " ").replace("\t", " ")


def write_results_dir(results: Mapping[str, Sequence[MMERow]], directory: str | Path) -> list[Path]:
    """Write `<task>.txt` files in the eval_tool format; returns the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for task, rows in results.items():
        path = directory / f"{task}.txt"
        with path.open("w", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                handle.write("\t".join((row.image, row.question, row.answer, _one_line(row.response))) + "\n")
        written.append(path)
    return written


# --- scoring --------------------------------------------------------------------------------


def score_task(task: str, rows: Sequence[MMERow], path: str | Path | None = None) -> MMETaskScore:
    """acc, acc+ and score for one task; rows must come in per-image pairs, as in the template."""
    where = path if path is not None else task
    if not rows:
        raise FormatError(where, "no questions")
    if len(rows) % 2:
        raise FormatError(where, f"{len(rows)} lines; MME asks exactly two questions per image")
    correct = both_right = other = 0
    for start in range(0, len(rows), 2):
        first, second = rows[start], rows[start + 1]
        if first.image != second.image:
            raise FormatError(
                where,
                f"lines {start + 1}-{start + 2} pair {first.image} with {second.image}; "
                "keep each image's two questions on consecutive lines",
            )
        right = 0
        for row in (first, second):
            prediction = parse_prediction(row.response)
            other += prediction == "other"
            right += prediction == row.answer.lower()
        correct += right
        both_right += right == 2
    images = len(rows) // 2
    acc = correct / len(rows)
    acc_plus = both_right / images
    return MMETaskScore(
        task=task,
        questions=len(rows),
        images=images,
        acc=acc,
        acc_plus=acc_plus,
        other=other,
        score=acc * 100 + acc_plus * 100,
    )


def score_results(results: Mapping[str, Sequence[MMERow]], source: str | Path | None = None) -> MMEScores:
    """Perception and Cognition from rows of all 14 tasks."""
    missing = [t for t in TASKS if t not in results]
    if missing:
        raise FormatError(source or "results", f"missing tasks: {', '.join(missing)}")
    tasks = {t: score_task(t, results[t], Path(source) / f"{t}.txt" if source is not None else None) for t in TASKS}
    perception = 0.0
    for t in PERCEPTION_TASKS:
        perception += tasks[t].score
    cognition = 0.0
    for t in COGNITION_TASKS:
        cognition += tasks[t].score
    return MMEScores(perception=perception, cognition=cognition, tasks=tasks)


def score_results_dir(directory: str | Path) -> MMEScores:
    """What `python calculation.py --results_dir DIR` reports."""
    return score_results(read_results_dir(directory), source=directory)


# --- ground truth and LLaVA answers ---------------------------------------------------------


@dataclass(frozen=True)
class GroundTruth:
    """(task, image stem, question) -> (image name for the results file, 'Yes'/'No')."""

    source: Path
    entries: Mapping[tuple[str, str, str], tuple[str, str]]

    def get(self, task: str, stem: str, question: str) -> tuple[str, str] | None:
        return self.entries.get((task, stem, question))


def _stem(name: str) -> str:
    return os.path.splitext(Path(name).name)[0]


def load_ground_truth(directory: str | Path) -> GroundTruth:
    """Read answers from an eval_tool folder (`<task>.txt`, e.g. Your_Results/) or the MME release.

    The release (`MME_Benchmark_release_version/`) has `<task>/<stem>.txt` or
    `<task>/questions_answers_YN/<stem>.txt` files with "question<TAB>answer" lines.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FormatError(directory, "not a folder (expected an eval_tool folder or the MME release folder)")
    entries: dict[tuple[str, str, str], tuple[str, str]] = {}

    def add(task: str, image: str, question: str, answer: str, path: Path, number: int) -> None:
        if answer.lower() not in ("yes", "no"):
            raise FormatError(path, f"ground truth must be Yes or No, got {answer!r}", number)
        entries[(task, _stem(image), question)] = (image, answer)

    if any((directory / f"{t}.txt").is_file() for t in TASKS):
        for task in TASKS:
            path = directory / f"{task}.txt"
            if not path.is_file():
                log.warning("ground truth folder %s has no %s.txt", directory, task)
                continue
            for number, fields in read_task_file(path, columns=3):
                add(task, fields[0], fields[1], fields[2], path, number)
    else:
        for task in TASKS:
            task_dir = directory / task
            qa_dir = task_dir / "questions_answers_YN" if (task_dir / "questions_answers_YN").is_dir() else task_dir
            if not qa_dir.is_dir():
                continue
            for path in sorted(qa_dir.glob("*.txt")):
                for number, fields in read_task_file(path, columns=2):
                    if len(fields) != 2:
                        raise FormatError(path, f"expected question<TAB>answer, got {len(fields)} fields", number)
                    add(task, path.name, fields[0].lstrip(), fields[1].strip(), path, number)
    if not entries:
        raise FormatError(directory, "no MME ground truth found (neither <task>.txt nor <task>/ folders)")
    return GroundTruth(source=directory, entries=entries)


@dataclass(frozen=True)
class _Question:
    question_id: str
    text: str
    category: str
    line: int


def _load_questions(path: str | Path) -> list[_Question]:
    """Question records of LLaVA's llava_mme.jsonl (question_id, text, category)."""
    questions = []
    for line, record in iter_jsonl(path):
        question_id = str(require(record, "question_id", path, line))
        category = record.get("category") or question_id.split("/")[0]
        questions.append(_Question(question_id, text_field(record, "text", path, line), str(category), line))
    return questions


def _mme_question(text: str) -> str:
    """LLaVA prompt -> the question as MME writes it (minus the yes/no suffix choice)."""
    if LLAVA_SUFFIX in text:
        text = text.replace(LLAVA_SUFFIX, "").strip()
    return text


def _lookup(gt: GroundTruth, task: str, stem: str, text: str) -> tuple[str, tuple[str, str] | None]:
    question = _mme_question(text)
    if MME_SUFFIX.strip() in question:
        return question, gt.get(task, stem, question)
    single = question + MME_SUFFIX
    found = gt.get(task, stem, single)
    if found is not None:
        return single, found
    double = question + " " + MME_SUFFIX
    found = gt.get(task, stem, double)
    return (double, found) if found is not None else (single, None)


@dataclass(frozen=True)
class _Answer:
    question_id: str
    prompt: str
    text: str
    line: int


@dataclass(frozen=True)
class MMEConversion:
    """What converting LLaVA answers did besides scoring, so nothing is dropped unseen.

    answers: answer lines read; scored: answers that became eval_tool rows;
    not_in_questions: answers whose (question_id, prompt) the --questions file lacks (scored from
    their own prompt, as the converter does); missing_gt: answers left out for want of ground
    truth (only with skip_missing); duplicates: repeated (question_id, prompt) lines replaced by
    the later one (only with allow_duplicates).
    """

    answers: int
    scored: int
    not_in_questions: int
    missing_gt: int
    duplicates: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _read_answers(path: str | Path, *, allow_duplicates: bool) -> tuple[list[_Answer], int, int]:
    """LLaVA answers keyed by (question_id, prompt), file order; also line and duplicate counts.

    MME asks two questions per image under one question_id, so only a repeated (question_id,
    prompt) pair is a duplicate. The converter would write both lines, which shifts
    calculation.py's pairs; here that is an error unless allow_duplicates, when the later answer
    replaces the earlier one in its place.
    """
    answers: dict[tuple[str, str], _Answer] = {}
    lines = duplicates = 0
    for line, record in iter_jsonl(path):
        lines += 1
        question_id = require(record, "question_id", path, line)
        if not isinstance(question_id, str):
            raise FormatError(path, f"question_id must be the image path (a string), got {question_id!r}", line)
        answer = _Answer(
            question_id, text_field(record, "prompt", path, line), text_field(record, "text", path, line), line
        )
        key = (answer.question_id, answer.prompt)
        if key in answers:
            if not allow_duplicates:
                raise FormatError(
                    path,
                    f"second answer to question_id {question_id} with the same prompt (first on line "
                    f"{answers[key].line}); pass allow_duplicates (--allow-duplicates) to keep the last one",
                    line,
                )
            duplicates += 1
        answers[key] = answer
    return list(answers.values()), lines, duplicates


def llava_rows(
    questions_path: str | Path | None,
    answers_path: str | Path,
    gt: GroundTruth,
    *,
    skip_missing: bool = False,
    allow_duplicates: bool = False,
) -> tuple[dict[str, list[MMERow]], MMEConversion]:
    """Turn LLaVA answers into eval_tool rows as LLaVA's convert_answer_to_mme.py does.

    Like the converter, every answer is converted from its own question_id (task = first path
    part, image = last part) and prompt; the question file is only checked against: a question
    without an answer is an error (its image would be scored on one question), an answer the
    file lacks is scored and counted in `not_in_questions`. An answer without ground truth is an
    error (the converter raises KeyError) unless skip_missing, which leaves it out and counts it.

    Rows are grouped per image in first-answer order. For an answer file in question order that
    is the converter's own output; the converter would instead pair lines of different images
    when answers come shuffled, and calculation.py would score those pairs.
    """
    answers, lines, duplicates = _read_answers(answers_path, allow_duplicates=allow_duplicates)
    not_in_questions = 0
    if questions_path is not None:
        questions = _load_questions(questions_path)
        answered = {(a.question_id, a.prompt) for a in answers}
        unanswered = [q for q in questions if (q.question_id, q.text) not in answered]
        if unanswered:
            q = unanswered[0]
            raise FormatError(
                answers_path,
                f"{len(unanswered)} questions have no answer, e.g. {q.question_id} (questions line {q.line})",
            )
        asked = {(q.question_id, q.text) for q in questions}
        not_in_questions = sum((a.question_id, a.prompt) not in asked for a in answers)
        if not_in_questions:
            log.warning(
                "%d answers in %s are not in %s; scored from their own prompts, as LLaVA's converter does",
                not_in_questions,
                answers_path,
                questions_path,
            )

    by_image: dict[str, dict[str, list[MMERow]]] = defaultdict(lambda: defaultdict(list))
    no_truth: list[tuple[_Answer, str]] = []
    for a in answers:
        task = a.question_id.split("/")[0]
        question, truth = _lookup(gt, task, _stem(a.question_id), a.prompt)
        if truth is None:
            no_truth.append((a, question))
            continue
        image, answer = truth
        by_image[task][image].append(MMERow(image, question, answer, a.text))
    if no_truth and not skip_missing:
        a, question = no_truth[0]
        raise FormatError(
            gt.source,
            f"no ground truth for {len(no_truth)} answers, e.g. {a.question_id}: {question!r} "
            f"(answers line {a.line}); pass skip_missing (--skip-missing-gt) to leave them out and count them",
        )
    if no_truth:
        log.warning("left out %d answers without ground truth in %s", len(no_truth), gt.source)

    rows: dict[str, list[MMERow]] = {}
    for task in [t for t in TASKS if t in by_image] + [t for t in by_image if t not in TASKS]:
        for image, pair in by_image[task].items():
            if len(pair) != 2:
                raise FormatError(
                    answers_path,
                    f"{task}/{image} has {len(pair)} answered questions with ground truth; MME scores "
                    "exactly two per image (calculation.py would pair lines of different images)",
                )
        rows[task] = [row for pair in by_image[task].values() for row in pair]
    report = MMEConversion(
        answers=lines,
        scored=sum(len(r) for r in rows.values()),
        not_in_questions=not_in_questions,
        missing_gt=len(no_truth),
        duplicates=duplicates,
    )
    return rows, report


def score_llava_answers(
    questions_path: str | Path | None,
    answers_path: str | Path,
    gt_dir: str | Path,
    *,
    skip_missing: bool = False,
    allow_duplicates: bool = False,
    write_dir: str | Path | None = None,
) -> tuple[MMEScores, MMEConversion]:
    """Convert LLaVA answers (optionally writing eval_tool files) and score them."""
    results, report = llava_rows(
        questions_path,
        answers_path,
        load_ground_truth(gt_dir),
        skip_missing=skip_missing,
        allow_duplicates=allow_duplicates,
    )
    if write_dir is not None:
        write_results_dir(results, write_dir)
    return score_results(results, source=write_dir), report


# --- items ----------------------------------------------------------------------------------

QUESTIONS_FILE = "llava_mme.jsonl"
RELEASE_FOLDER = "MME_Benchmark_release_version"
TEMPLATE_FOLDER = "eval_tool/Your_Results"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def llava_prompt(mme_question: str) -> str:
    """An MME question -> LLaVA's prompt (the yes/no request replaced by LLaVA's suffix)."""
    return mme_question.replace(MME_SUFFIX.strip(), "").strip() + "\n" + LLAVA_SUFFIX


def _ground_truth_folder(src: Source) -> str:
    for candidate in (RELEASE_FOLDER, TEMPLATE_FOLDER, ""):
        parts = [candidate] if candidate else []
        names = src.files(*parts, suffixes=(".txt",))
        if any(name.split("/", 1)[0] in TASKS or name[:-4] in TASKS for name in names):
            return candidate
    raise FormatError(
        src.url,
        f"no MME ground truth: expected {RELEASE_FOLDER}/, {TEMPLATE_FOLDER}/ "
        "or the release / eval_tool layout in the folder itself",
    )


def _release_images(src: Source, folder: str) -> dict[tuple[str, str], str]:
    """(task, image stem) -> image path relative to the release folder."""
    found = {}
    for relative in src.files(*([folder] if folder else []), suffixes=_IMAGE_SUFFIXES):
        task = relative.split("/", 1)[0]
        found[(task, _stem(relative))] = relative
    return found


@dataclass(frozen=True)
class MMEBenchmark:
    """MME for the runner: items with their ground truth, scores by calculation.py's rules.

    Every ground-truth question is asked, as MME's score is defined over all of them: a
    question file (llava_mme.jsonl) that lacks some (LLaVA's copies lack 6 of the 2374) is
    completed from the ground truth and the release images; a question with no ground truth
    is an error unless `skip_missing_gt`.

    Arguments:
    images: folder/URL of the release images (default: the release folder in the source).
    skip_missing_gt: leave out (with a warning) questions the ground truth lacks, e.g. with
        the older eval_tool template that lacks 2 landmark images.
    """

    name: str = "mme"
    needs_judge: bool = False
    max_new_tokens: int = 128
    images: str | None = None
    skip_missing_gt: bool = False

    def load_items(self, source: str, *, limit: int | None = None) -> list[EvalItem]:
        from som import storage
        from som.eval.items import EvalItem, Source, check_unique, take

        src = Source(source)
        gt_folder = _ground_truth_folder(src)
        gt = load_ground_truth(src.local_dir(*([gt_folder] if gt_folder else []), suffixes=(".txt",)))
        release = RELEASE_FOLDER if src.exists(RELEASE_FOLDER) else ("" if gt_folder == "" else RELEASE_FOLDER)
        image_root = self.images or src.url_of(*([release] if release else []))
        if src.exists(QUESTIONS_FILE):
            records = [(q.question_id, q.category, q.text) for q in _load_questions(src.local(QUESTIONS_FILE))]
            records += self._uncovered_records(src, release, gt, records)
        else:
            records = self._release_records(src, release, gt)
        items: list[EvalItem] = []
        nth: dict[str, int] = defaultdict(int)
        missing: list[str] = []
        for question_id, task, text in records:
            k = nth[question_id]
            nth[question_id] += 1
            question, truth = _lookup(gt, task, _stem(question_id), text)
            if truth is None:
                missing.append(f"{question_id}: {text.splitlines()[0]!r}")
                continue
            image_name, answer = truth
            items.append(
                EvalItem(
                    id=f"{question_id}#{k}",
                    prompt=text,
                    image=storage.join(image_root, question_id),
                    meta={"task": task, "image_name": image_name, "question": question, "answer": answer},
                )
            )
        if missing and not self.skip_missing_gt:
            raise FormatError(
                gt.source,
                f"{len(missing)} questions have no ground truth here (e.g. {missing[0]}); "
                "use the official eval_tool template or the release, or set skip_missing_gt "
                "to leave them out",
            )
        if missing:
            log.warning("MME: %d questions have no ground truth in %s and are left out", len(missing), gt.source)
        check_unique(items, src.url)
        return take(items, limit)

    @staticmethod
    def _uncovered_records(
        src: Source, release: str, gt: GroundTruth, records: Sequence[tuple[str, str, str]]
    ) -> list[tuple[str, str, str]]:
        """Ground-truth questions the question file lacks, as (question_id, task, LLaVA prompt)."""
        covered = set()
        for question_id, task, text in records:
            question, truth = _lookup(gt, task, _stem(question_id), text)
            if truth is not None:
                covered.add((task, _stem(question_id), question))
        lacking = [key for key in gt.entries if key not in covered]
        if not lacking:
            return []
        images = _release_images(src, release)
        added = []
        for task, stem, question in lacking:
            image = images.get((task, stem))
            if image is None:
                raise FormatError(
                    src.url,
                    f"{QUESTIONS_FILE} lacks {len(lacking)} ground-truth questions (e.g. "
                    f"{task}/{stem}: {question!r}) and no release image was found for them; add the "
                    f"release images ({RELEASE_FOLDER}/) or a complete {QUESTIONS_FILE}",
                )
            added.append((image, task, llava_prompt(question)))
        log.info("MME: %d ground-truth questions missing from %s are asked too", len(added), QUESTIONS_FILE)
        return added

    @staticmethod
    def _release_records(src: Source, release: str, gt: GroundTruth) -> list[tuple[str, str, str]]:
        """(question_id, task, LLaVA prompt) for every ground-truth question, release order."""
        images = _release_images(src, release)
        records = []
        for (task, stem, question), _ in gt.entries.items():
            image = images.get((task, stem))
            if image is None:
                raise FormatError(gt.source, f"{task}: no image file for {stem} under {src.url_of(release)}")
            records.append((image, task, llava_prompt(question)))
        return records

    def score(
        self,
        items: list[EvalItem],
        answers: dict[str, str],
        *,
        judge: Judge | None = None,
        cache_url: str | None = None,
        allow_partial: bool = False,
    ) -> dict[str, Any]:
        from som.eval.items import answers_for

        answered = answers_for(items, answers, allow_partial=allow_partial, benchmark=self.name)
        rows = eval_tool_rows(items, answered)
        tasks = {t: score_task(t, rows[t]) for t in TASKS if rows.get(t)}
        missing = [t for t in TASKS if t not in tasks]
        if missing:
            log.warning("MME: no scored questions for tasks %s; Perception/Cognition are partial sums", missing)
        perception = 0.0
        for t in PERCEPTION_TASKS:
            perception += tasks[t].score if t in tasks else 0.0
        cognition = 0.0
        for t in COGNITION_TASKS:
            cognition += tasks[t].score if t in tasks else 0.0
        scores = MMEScores(perception=perception, cognition=cognition, tasks=tasks)
        return {**scores.to_dict(), "missing_tasks": missing, "headline": perception}


def eval_tool_rows(items: Sequence[EvalItem], answers: Mapping[str, str]) -> dict[str, list[MMERow]]:
    """eval_tool rows per task, in item order; an image loses both rows when one is unanswered."""
    by_image: dict[tuple[str, str], list[EvalItem]] = defaultdict(list)
    for item in items:
        by_image[(item.meta["task"], item.id.rsplit("#", 1)[0])].append(item)
    rows: dict[str, list[MMERow]] = defaultdict(list)
    for (task, _), pair in by_image.items():
        if not all(item.id in answers for item in pair):
            continue
        for item in pair:
            meta = item.meta
            rows[task].append(MMERow(meta["image_name"], meta["question"], meta["answer"], answers[item.id]))
    return dict(rows)
