"""SEED-Bench-1 (image and video dimensions) scored like LLaVA's convert_seed_for_submission.py.

Official (LLaVA) semantics: a question is right when the model's answer text is exactly the
answer letter ("B" is right, "B." and " B" are not); a question without an answer counts as
wrong; accuracy is given per question type (SEED-Bench's 12 dimensions: 1-9 on images, 10-12 on
videos) and over all questions of the data type, both in percent. The converter prints the
per-dimension accuracies and the total over all 19,242 questions, then the image and the video
accuracy; `SeedScores.official` holds exactly those numbers (`all_accuracy`, `image_accuracy`,
`video_accuracy` in the JSON) and `report` the lines it prints. SEED-Bench v1 lists
question_id 49914 twice; the converter counts it twice, and so does somflow.

The answer letters come from the official annotation file `SEED-Bench.json` ({"question_type":
{name: id}, "questions": [{"question_id", "answer", "question_type_id", "data_type",
"choice_a".."choice_d", ...}]}); a JSON list or JSON Lines file of such question records works too.
Model answers are JSON Lines with question_id plus either `prediction` (the upload format LLaVA
writes, as in ../shared/reference/seed/) or `text` (LLaVA's raw answers).

Question ids are matched as LLaVA's converter matches them, so the numbers agree with it:

* LLaVA answers (`text`): the converter keeps each answer's question_id with its JSON type and
  looks an annotation question up by int(question_id) when that parses ("101669" -> 101669),
  else by the string ("v0"). LLaVA's own answer files carry JSON numbers, so they match; an
  answer file with string ids ("101669") matches no image question, and every image question
  counts as wrong (0%), as in the converter. The result says so: `unmatched_answers` counts
  answers that matched no question and `id_type_mismatches` those that would have matched as
  text, with a warning in the log.
* Upload format (`prediction`): ids are compared as text, since the converter writes the
  annotation's own (string) ids into that file.

The upload file (`write_upload`, `som eval submission seed`) is written as the converter
writes it: one line per annotation question, duplicates included, in the annotation's order,
`{"question_id": <the annotation's id, as typed there>, "prediction": <answer text>}`; the
answer is looked up by the id as given first, then by int() of it (the reverse of scoring).

`lenient_letter` is a separate, non-official extractor for chatty models ("(B) a dog", "The
answer is B", or the option's own text); its accuracy is reported next to the exact one, never
mixed into it.

Items (`SeedBenchmark.load_items(source)`), from the folder or URL of the published files
(LLaVA's `playground/data/eval/seed_bench/`): `SEED-Bench.json` and the images in
`SEED-Bench-image/` (or the `images` folder/URL given). The prompt is the question, then one
"A. option" line per choice, then PROMPT_SUFFIX, each on its own line (LLaVA's
llava-seed-bench.jsonl). Video questions show the model LLaVA's middle frame
(`som.eval.benchmarks.seed_video`): taken from `SEED-Bench-video-image/<type>_<id>.png` (LLaVA's
extracted frames, or the `frames` folder/URL given) when there, else extracted from the videos
(`SEED-Bench-video/` or `videos/` in a local source, or the `videos` folder given) and written
there. Without frames or videos the video questions are skipped, with a warning, and the scores
say so (`video_skipped`; `all_accuracy`, `video_accuracy` and `official` are then None). A repeated id
(49914) is one item, answered once and counted as often as the annotation lists it, as the
converter counts it: the headline is the converter's image accuracy (`image_accuracy`), while
`exact` counts each item once.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from som.eval.benchmarks import FormatError, iter_jsonl, read_json

if TYPE_CHECKING:
    from som.eval.items import EvalItem, Source
    from som.eval.judge import Judge

log = logging.getLogger(__name__)

LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
PROMPT_SUFFIX = "Answer with the option's letter from the given choices directly."

QUESTION_TYPES: dict[int, str] = {
    1: "Scene Understanding",
    2: "Instance Identity",
    3: "Instance Attributes",
    4: "Instance Location",
    5: "Instances Counting",
    6: "Spatial Relation",
    7: "Instance Interaction",
    8: "Visual Reasoning",
    9: "Text Understanding",
    10: "Action Recognition",
    11: "Action Prediction",
    12: "Procedure Understanding",
}
"""SEED-Bench v1 dimension names, used when the annotation file does not name them."""


@dataclass(frozen=True)
class SeedQuestion:
    """What scoring needs from one annotation record."""

    question_id: str
    answer: str
    question_type_id: int
    data_type: str
    choices: dict[str, str]


@dataclass(frozen=True)
class SeedAccuracy:
    """Accuracy (percent) per question type name and over all scored questions."""

    overall: float
    correct: int
    total: int
    per_type: dict[str, float]


@dataclass(frozen=True)
class SeedOfficial:
    """What convert_seed_for_submission.py computes and prints: accuracy per dimension over all
    questions, then over all, image and video questions (None where the annotation has none)."""

    per_dimension: dict[str, float]
    splits: dict[str, SeedAccuracy | None]
    report: list[str]

    def to_dict(self) -> dict[str, object]:
        return {
            "per_dimension": self.per_dimension,
            "counts": {
                name: None if acc is None else {"correct": acc.correct, "total": acc.total}
                for name, acc in self.splits.items()
            },
            "report": self.report,
        }


@dataclass(frozen=True)
class SeedScores:
    """Exact-letter accuracy (official) over `data_type`, the official all/image/video summary,
    and, when asked for, the lenient accuracy."""

    data_type: str
    exact: SeedAccuracy
    lenient: SeedAccuracy | None
    unanswered: int
    official: SeedOfficial | None = None
    answer_format: str | None = None
    unmatched_answers: int = 0
    id_type_mismatches: int = 0

    def split_accuracy(self, name: str) -> float | None:
        """Official accuracy over "all", "image" or "video" questions (None when there are none)."""
        split = self.official.splits.get(name) if self.official is not None else None
        return split.overall if split is not None else None

    def to_dict(self) -> dict[str, object]:
        return {
            "benchmark": "seed",
            "data_type": self.data_type,
            "accuracy": self.exact.overall,
            "all_accuracy": self.split_accuracy("all"),
            "image_accuracy": self.split_accuracy("image"),
            "video_accuracy": self.split_accuracy("video"),
            "exact": asdict(self.exact),
            "official": self.official.to_dict() if self.official is not None else None,
            "lenient": asdict(self.lenient) if self.lenient is not None else None,
            "unanswered": self.unanswered,
            "answer_format": self.answer_format,
            "unmatched_answers": self.unmatched_answers,
            "id_type_mismatches": self.id_type_mismatches,
        }


def _question(record: Mapping[str, Any], path: str | Path, line: int | None) -> SeedQuestion:
    for key in ("question_id", "answer", "question_type_id"):
        if key not in record:
            where = f"question {record.get('question_id', '?')}: " if line is None else ""
            raise FormatError(path, f"{where}missing field {key!r}", line)
    try:
        type_id = int(record["question_type_id"])
    except (TypeError, ValueError):
        raise FormatError(
            path, f"question {record['question_id']}: question_type_id must be an integer", line
        ) from None
    choices = {
        letter: str(record[f"choice_{letter.lower()}"]) for letter in LETTERS if f"choice_{letter.lower()}" in record
    }
    return SeedQuestion(
        question_id=str(record["question_id"]),
        answer=str(record["answer"]),
        question_type_id=type_id,
        data_type=str(record.get("data_type", "image")),
        choices=choices,
    )


def load_questions(path: str | Path) -> tuple[list[SeedQuestion], dict[int, str]]:
    """Questions and type names from SEED-Bench.json, a JSON list, or JSON Lines."""
    path = Path(path)
    names = dict(QUESTION_TYPES)
    if path.suffix == ".jsonl":
        return [_question(record, path, line) for line, record in iter_jsonl(path)], names
    data = read_json(path)
    if isinstance(data, dict):
        if "questions" not in data:
            raise FormatError(path, "expected SEED-Bench.json with a 'questions' list")
        types = data.get("question_type", {})
        if isinstance(types, dict):
            names.update({int(i): str(n) for n, i in types.items()})
        data = data["questions"]
    if not isinstance(data, list):
        raise FormatError(path, "expected a list of question records")
    questions = []
    for record in data:
        if not isinstance(record, dict):
            raise FormatError(path, "every question must be a JSON object")
        questions.append(_question(record, path, None))
    return questions, names


def llava_lookup_key(question_id: str) -> int | str:
    """The key LLaVA's converter looks an annotation question up by: int() of it if it parses.

    SEED-Bench.json's ids are strings ("101669", video ones "v0"...), LLaVA's answers carry
    ints for the numeric ones, so the converter tries int() first and falls back to the text.
    """
    try:
        return int(question_id)
    except ValueError:
        return question_id


@dataclass(frozen=True)
class SeedAnswers:
    """Answers as read from a file, keyed so that matching can follow the file's format.

    format: "upload" (`prediction` field; ids compared as text, as the upload file repeats the
    annotation's ids) or "llava" (`text` field; ids keep their JSON type, as in the converter's
    dict). by_id: question_id -> answer.
    """

    format: str
    by_id: dict[int | str, str]

    def for_questions(self, questions: Sequence[SeedQuestion]) -> tuple[dict[str, str], int, int]:
        """Answers keyed by SeedQuestion.question_id, answers matching no question, and how many
        of those would match if ids were compared as text (a string/int type mismatch)."""
        if self.format == "upload":
            matched = {q.question_id: self.by_id[q.question_id] for q in questions if q.question_id in self.by_id}
            used: set[int | str] = set(matched)
        else:
            keys = {q.question_id: llava_lookup_key(q.question_id) for q in questions}
            matched = {qid: self.by_id[key] for qid, key in keys.items() if key in self.by_id}
            used = {key for key in keys.values() if key in self.by_id}
        unmatched = [key for key in self.by_id if key not in used]
        known = {q.question_id for q in questions}
        type_mismatches = sum(str(key) in known for key in unmatched)
        return matched, len(unmatched), type_mismatches


def load_predictions(path: str | Path) -> SeedAnswers:
    """Answers from the upload format (`prediction`) or LLaVA's answers (`text`); one per file."""
    by_id: dict[int | str, str] = {}
    answer_format: str | None = None
    for line, record in iter_jsonl(path):
        if "question_id" not in record:
            raise FormatError(path, "missing field 'question_id'", line)
        line_format = "upload" if "prediction" in record else "llava"
        value = record.get("prediction", record.get("text"))
        if not isinstance(value, str):
            raise FormatError(path, "expected a string 'prediction' (upload format) or 'text' (LLaVA answers)", line)
        if answer_format is None:
            answer_format = line_format
        elif line_format != answer_format:
            raise FormatError(path, "mixes 'prediction' (upload format) and 'text' (LLaVA answers) lines", line)
        question_id = record["question_id"]
        if isinstance(question_id, bool) or not isinstance(question_id, (str, int)):
            raise FormatError(path, f"question_id must be a string or an integer, got {question_id!r}", line)
        if answer_format == "upload":
            question_id = str(question_id)
        if question_id in by_id and by_id[question_id] != value:
            # SEED-Bench v1 lists question_id 49914 twice, so an upload file repeats it; only a
            # repeat with a different answer is ambiguous.
            raise FormatError(path, f"second, different answer to question_id {question_id}", line)
        by_id[question_id] = value
    return SeedAnswers(format=answer_format or "upload", by_id=by_id)


_LEADING_LETTER = re.compile(r"^[(\[]?([A-D])(?:[)\].:,]|$)")
_STATED_LETTER = re.compile(r"(?i:answer|option|choice)\s*(?:(?i:is)\s*)?[:：]?\s*[(\[]?([A-D])(?![A-Za-z])")


def _plain(text: str) -> str:
    return " ".join(text.casefold().split()).rstrip(".")


def lenient_letter(response: str, choices: Mapping[str, str] | None = None) -> str | None:
    """The option letter a free-form answer most plausibly means, or None.

    Tries, in order: a leading letter set off by punctuation ("B", "B.", "(B) ...", "B: ...");
    a stated letter ("The answer is B", "Option (C)"); the text of exactly one option. A bare
    leading "A " is not taken as a letter, since it is usually the article.
    """
    text = response.strip()
    match = _LEADING_LETTER.match(text)
    if match:
        return match.group(1)
    match = _STATED_LETTER.search(text)
    if match:
        return match.group(1)
    if choices:
        said = _plain(text)
        hits = [letter for letter, option in choices.items() if said and _plain(option) == said]
        if len(hits) == 1:
            return hits[0]
    return None


def _accuracy(questions: Sequence[SeedQuestion], right: Sequence[bool], names: Mapping[int, str]) -> SeedAccuracy:
    totals: Counter[int] = Counter()
    correct: Counter[int] = Counter()
    for question, ok in zip(questions, right, strict=False):
        totals[question.question_type_id] += 1
        correct[question.question_type_id] += ok
    per_type = {names.get(t, str(t)): correct[t] / totals[t] * 100 for t in sorted(totals)}
    n = sum(totals.values())
    hits = sum(correct.values())
    return SeedAccuracy(overall=hits / n * 100 if n else 0.0, correct=hits, total=n, per_type=per_type)


def official_summary(
    questions: Sequence[SeedQuestion], predictions: Mapping[str, str], type_names: Mapping[int, str]
) -> SeedOfficial:
    """The converter's numbers and printed lines: per dimension and "Total accuracy" over every
    question, then "image accuracy" and "video accuracy" (a split without questions is left out
    of the lines, where the converter would divide by zero)."""
    right = [predictions.get(q.question_id) == q.answer for q in questions]
    splits: dict[str, SeedAccuracy | None] = {"all": None, "image": None, "video": None}
    report: list[str] = []
    if questions:
        overall = _accuracy(questions, right, type_names)
        splits["all"] = overall
        report = [f"{name}: {accuracy:.2f}%" for name, accuracy in overall.per_type.items()]
        report.append(f"Total accuracy: {overall.overall:.2f}%")
    for kind in ("image", "video"):
        chosen = [(q, ok) for q, ok in zip(questions, right, strict=False) if q.data_type == kind]
        if chosen:
            split = _accuracy([q for q, _ in chosen], [ok for _, ok in chosen], type_names)
            splits[kind] = split
            report.append(f"{kind} accuracy: {split.overall:.2f}%")
    per_dimension = splits["all"].per_type if splits["all"] is not None else {}
    return SeedOfficial(per_dimension=per_dimension, splits=splits, report=report)


def score_seed(
    questions: Sequence[SeedQuestion],
    predictions: Mapping[str, str],
    *,
    type_names: Mapping[int, str] = QUESTION_TYPES,
    data_type: str = "image",
    lenient: bool = False,
) -> SeedScores:
    """Exact-letter accuracy over questions of `data_type` ("image", "video" or "all"), plus the
    converter's summary over all the questions given."""
    selected = [q for q in questions if data_type == "all" or q.data_type == data_type]
    if not selected:
        raise ValueError(f"no {data_type} questions to score")
    unanswered = sum(q.question_id not in predictions for q in selected)
    if unanswered:
        log.warning("%d of %d %s questions have no answer; they count as wrong", unanswered, len(selected), data_type)
    exact = [predictions.get(q.question_id) == q.answer for q in selected]
    loose = None
    if lenient:
        loose_right = [
            q.question_id in predictions and lenient_letter(predictions[q.question_id], q.choices) == q.answer
            for q in selected
        ]
        loose = _accuracy(selected, loose_right, type_names)
    return SeedScores(
        data_type=data_type,
        exact=_accuracy(selected, exact, type_names),
        lenient=loose,
        unanswered=unanswered,
        official=official_summary(questions, predictions, type_names),
    )


def score_seed_files(
    questions: str | Path, answers: str | Path, *, data_type: str = "image", lenient: bool = False
) -> SeedScores:
    """Score an answers JSONL against SEED-Bench.json (or an equivalent question list).

    Answers are matched to questions as `SeedAnswers.for_questions` describes; answers that
    match no question are counted (`unmatched_answers`), and those that only miss because of
    the id's JSON type (`id_type_mismatches`) get a warning, since they zero the score.
    """
    records, names = load_questions(questions)
    read = load_predictions(answers)
    predictions, unmatched, type_mismatches = read.for_questions(records)
    if type_mismatches:
        log.warning(
            "%d answers in %s have a string question_id that LLaVA's converter looks up as an integer; "
            "they count as wrong, as in convert_seed_for_submission.py (write numeric ids as JSON numbers)",
            type_mismatches,
            answers,
        )
    elif unmatched:
        log.warning("%d answers in %s are for question_ids not in %s", unmatched, answers, questions)
    try:
        scores = score_seed(records, predictions, type_names=names, data_type=data_type, lenient=lenient)
    except ValueError as exc:
        raise FormatError(questions, str(exc)) from None
    return replace(scores, answer_format=read.format, unmatched_answers=unmatched, id_type_mismatches=type_mismatches)


# --- upload file -------------------------------------------------------------------------------


def _upload_answer(by_id: Mapping[int | str, str], question_id: Any) -> str | None:
    """The converter's lookup for the upload file: the id as the annotation types it, then int() of it."""
    if question_id in by_id:
        return by_id[question_id]
    try:
        return by_id.get(int(question_id))
    except (TypeError, ValueError):
        return None


def write_upload(
    questions: str | Path, answers: str | Path, out: str, *, allow_partial: bool = False
) -> dict[str, Any]:
    """Write the leaderboard upload file from LLaVA's answers, as convert_seed_for_submission.py
    does, and return what was written with the converter's scores.

    Every annotation question needs an answer (the converter stops with a KeyError otherwise);
    with `allow_partial` the unanswered ones are left out and listed instead. The file appears
    whole or not at all (`out` is a path or a som.storage URL).
    """
    from som import storage

    path = Path(questions)
    data = read_json(path)
    records = data.get("questions") if isinstance(data, dict) else data
    if not isinstance(records, list):
        raise FormatError(path, "expected SEED-Bench.json with a 'questions' list")
    read = load_predictions(answers)
    if read.format != "llava":
        raise FormatError(answers, "expected LLaVA's answers (question_id + text); this is already an upload file")
    lines: list[str] = []
    missing: list[Any] = []
    for record in records:
        if not isinstance(record, dict) or "question_id" not in record:
            raise FormatError(path, "every question needs a 'question_id'")
        question_id = record["question_id"]
        text = _upload_answer(read.by_id, question_id)
        if text is None:
            missing.append(question_id)
            continue
        lines.append(json.dumps({"question_id": question_id, "prediction": text}) + "\n")
    if missing and not allow_partial:
        raise FormatError(
            answers,
            f"no answer to {len(missing)} of {len(records)} questions in {path} (e.g. "
            f"{missing[:3]}); pass --allow-partial to write the answered ones",
        )
    storage.write_bytes_atomic(out, "".join(lines).encode("utf-8"))
    scores = score_seed_files(path, answers, data_type="all")
    log.info("wrote %d lines to %s", len(lines), out)
    return {
        "benchmark": "seed",
        "written": out,
        "lines": len(lines),
        "missing": len(missing),
        "missing_ids": missing[:20],
        "all_accuracy": scores.split_accuracy("all"),
        "image_accuracy": scores.split_accuracy("image"),
        "video_accuracy": scores.split_accuracy("video"),
        "report": scores.official.report if scores.official is not None else [],
        "upload": "SEED-Bench leaderboard (huggingface.co/spaces/AILab-CVC/SEED-Bench_Leaderboard), "
        "with SEED-Bench's notebook, as LLaVA's docs/Evaluation.md says",
    }


# --- items ----------------------------------------------------------------------------------

QUESTIONS_FILE = "SEED-Bench.json"
IMAGE_FOLDER = "SEED-Bench-image"
FRAME_FOLDER = "SEED-Bench-video-image"
VIDEO_FOLDERS: tuple[str, ...] = ("SEED-Bench-video", "videos")
"""Folders of a local source searched for the videos (LLaVA's script reads `videos/`)."""


def seed_prompt(question: str, choices: Mapping[str, str]) -> str:
    """Question, "A. option" lines, the letter instruction: LLaVA's multiple-choice prompt."""
    lines = [question.strip()] + [f"{letter}. {choices[letter]}" for letter in LETTERS if letter in choices]
    return "\n".join(lines + [PROMPT_SUFFIX])


@dataclass(frozen=True)
class _Frames:
    """Where a video question's frame comes from: LLaVA's extracted frames, or the videos."""

    root: str
    present: frozenset[str]
    videos: Path | None

    def url(self, record: Mapping[str, Any], *, extract: bool) -> str | None:
        """The frame's URL, extracting it first when `extract`; None when neither the frame nor
        the videos are there. Without `extract` the URL is the one it will have."""
        from som import storage
        from som.eval.benchmarks.seed_video import extract_frame, frame_name, video_path

        name = frame_name(record)
        url = storage.join(self.root, name)
        if name in self.present:
            return url
        if self.videos is None:
            return None
        if extract:
            video = video_path(self.videos, record)
            index, png = extract_frame(video, record)
            storage.write_bytes_atomic(url, png)
            log.info("question %s: frame %d of %s -> %s", record["question_id"], index, video, url)
        return url


def _local_folder(location: str) -> Path:
    from som import storage

    if storage.protocol_of(location) not in storage.LOCAL_PROTOCOLS:
        raise ValueError(f"videos must be a local folder (OpenCV reads files), got {location}")
    return Path(storage.resolve(location)[1])


@dataclass(frozen=True)
class SeedBenchmark:
    """SEED-Bench-1 for the runner: image and video questions, exact-letter accuracy as LLaVA
    computes it; the headline stays the image accuracy (SEED-I, what SoM-LLaVA reports).

    Arguments:
    images: folder/URL of the SEED-Bench images (default: `<source>/SEED-Bench-image`).
    frames: folder/URL of the video questions' frames, read and written
        (default: `<source>/SEED-Bench-video-image`, LLaVA's layout).
    videos: local folder of the videos, for frames not yet extracted (default: `SEED-Bench-video/`
        or `videos/` in a local source).
    """

    name: str = "seed"
    needs_judge: bool = False
    max_new_tokens: int = 128
    images: str | None = None
    frames: str | None = None
    videos: str | None = None

    def _frames(self, src: Source) -> _Frames:
        from som import storage

        root = self.frames or src.url_of(FRAME_FOLDER)
        present = frozenset(url.rsplit("/", 1)[-1] for url in storage.list_images(root, (".png",)))
        videos: Path | None = None
        if self.videos is not None:
            videos = _local_folder(self.videos)
            if not videos.is_dir():
                raise ValueError(f"videos folder not found: {self.videos}")
        elif src.local_root is not None:
            videos = next((src.local_root / f for f in VIDEO_FOLDERS if (src.local_root / f).is_dir()), None)
        return _Frames(root=root, present=present, videos=videos)

    def load_items(self, source: str, *, limit: int | None = None) -> list[EvalItem]:
        from som import storage
        from som.eval.items import EvalItem, Source, take, with_meta

        src = Source(source)
        path = src.local(QUESTIONS_FILE)
        data = read_json(path)
        records = data.get("questions") if isinstance(data, dict) else data
        if not isinstance(records, list):
            raise FormatError(path, "expected SEED-Bench.json with a 'questions' list")
        _, names = load_questions(path)
        image_root = self.images or src.url_of(IMAGE_FOLDER)
        frames = (
            self._frames(src) if any(isinstance(r, dict) and r.get("data_type") == "video" for r in records) else None
        )
        items: list[EvalItem] = []
        first: dict[str, SeedQuestion] = {}
        listed: Counter[str] = Counter()
        skipped = 0
        for record in records:
            if not isinstance(record, dict):
                raise FormatError(path, "every question must be a JSON object")
            q = _question(record, path, None)
            if q.question_id in first:
                kept = first[q.question_id]
                if (kept.answer, kept.question_type_id) != (q.answer, q.question_type_id):
                    raise FormatError(path, f"question_id {q.question_id} is listed twice with different answers")
                log.info("%s: question_id %s repeats; one item, counted as often as listed", path, q.question_id)
                listed[q.question_id] += 1
                continue
            for key in ("question", "data_id"):
                if not isinstance(record.get(key), str):
                    raise FormatError(path, f"question {q.question_id}: missing text field {key!r}")
            if q.data_type == "image":
                image: str | None = storage.join(image_root, record["data_id"])
            elif q.data_type == "video" and frames is not None:
                image = frames.url(record, extract=limit is None or len(items) < limit)
                if image is None:
                    skipped += 1
                    continue
            else:
                raise FormatError(
                    path, f"question {q.question_id}: data_type must be 'image' or 'video', got {q.data_type!r}"
                )
            first[q.question_id] = q
            listed[q.question_id] += 1
            items.append(
                EvalItem(
                    id=q.question_id,
                    prompt=seed_prompt(record["question"], q.choices),
                    image=image,
                    meta={
                        "answer": q.answer,
                        "question_type_id": q.question_type_id,
                        "question_type": names.get(q.question_type_id, str(q.question_type_id)),
                        "choices": q.choices,
                        "data_type": q.data_type,
                    },
                )
            )
        if skipped:
            log.warning(
                "%s: skipping %d video questions: no frames in %s and no videos (give the videos "
                "folder, or LLaVA's extracted frames); all/video accuracy will not be reported",
                path,
                skipped,
                frames.root if frames is not None else FRAME_FOLDER,
            )
        # score() sees only items, so each carries what it needs to count as the converter does.
        items = [with_meta(item, listed=listed[item.id], video_skipped=skipped) for item in items]
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
        """The converter's image accuracy as headline, and its all/image/video accuracy (repeated
        ids counted as listed; all/video unless video questions were skipped)."""
        from som.eval.items import answers_for

        answered = answers_for(items, answers, allow_partial=allow_partial, benchmark=self.name)
        scored = [item for item in items if item.id in answered] if allow_partial else items
        questions = [
            SeedQuestion(
                item.id,
                item.meta["answer"],
                int(item.meta["question_type_id"]),
                item.meta.get("data_type", "image"),
                dict(item.meta["choices"]),
            )
            for item in scored
        ]
        as_listed = [
            q for q, item in zip(questions, scored, strict=True) for _ in range(int(item.meta.get("listed", 1)))
        ]
        names = {int(item.meta["question_type_id"]): item.meta["question_type"] for item in items}
        scores = score_seed(questions, answered, type_names=names, lenient=True)
        scores = replace(scores, official=official_summary(as_listed, answered, names))
        result: dict[str, object] = scores.to_dict()
        # the converter's image accuracy (a repeated id counts as often as it is listed)
        image = result.get("image_accuracy")
        result["headline"] = scores.exact.overall if image is None else image
        skipped = max((int(item.meta.get("video_skipped", 0)) for item in items), default=0)
        result["video_skipped"] = skipped
        if skipped:  # the converter's totals would silently be image-only
            result.update(all_accuracy=None, video_accuracy=None, official=None)
        return result
