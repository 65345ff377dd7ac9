"""MMBench and MMBench-CN: LLaVA's prompts, the official CircularEval, LLaVA's upload file.

Questions come from the official TSV (mmbench_dev_20230712.tsv, mmbench_dev_cn_20231003.tsv):
columns index, question, hint, A-D, answer, category, image (base64), source, l2-category,
comment, split. CircularEval copies of a question are rows of their own whose index is the
original's plus a multiple of 1,000,000 (options rotated, answer letter moved with them).

Reading the TSV (`read_tsv`) follows `pandas.read_table`, which both LLaVA and the evaluator use,
without pandas: tab-separated, '"' quoting, blank lines skipped, and a cell that is exactly one
of pandas' default NA strings ("", "nan", "NaN", "None", "NA", "N/A", "null", ...) is missing.

Prompts (`mmbench_prompt`), as llava/eval/model_vqa_mmbench.py builds them with the flags of
scripts/v1_5/eval/mmbench.sh and mmbench_cn.sh (--single-pred-prompt, no --all-rounds, so each
TSV row is asked once as it is): the hint and "\\n" first unless it is missing or reads
"nan"/"none" (any case); the question; "\\nA. option" per option up to the first missing one;
then "\\n" and the instruction ("Answer with the option's letter from the given choices
directly." / "请直接回答选项字母。" for --lang cn). The profile puts "<image>\\n" in front, and
generation is the script's 1024 tokens.

Scoring follows OpenCompass's tools/eval_mmbench.py, the evaluator of the MMBench dev results
LLaVA-1.5 reports (the server scores test the same way):

* A prediction's letter (`infer_letter`): `can_infer_option` on the whitespace-split text (one
  of A-E standing alone, unless "A" stands alone in a text of more than 3 words, where it may be
  the article; then A-E with one of the affixes "X.", "X,", "X:", "X)", "X).", "(X)", "(X).",
  ":X", ":X,", ":X.", ":X)", ":X)." found for exactly one letter), else `can_infer_text` (exactly
  one option's text, lower-cased, inside the lower-cased prediction). The evaluator reads
  predictions back from the upload xlsx, so a prediction that pandas reads as missing ("", "NA",
  "None", ...) is the text "nan" there, and here.
* CircularEval: a question counts only when every circular copy's letter is the answer. A copy
  whose letter is wrong fails the question at once. When no copy is wrong but some have no
  letter, the official evaluator asks ChatGPT (gpt-3.5-turbo-0613) to map those predictions to an
  option, and after 3 unusable replies draws a random letter (random.seed(2680)). somflow has no
  such judge here: those questions count as wrong (VLMEvalKit's "exact_matching" policy), and the
  result says how many there were (`undecided`) and what the accuracy would be if the judge got
  them all right (`circular_accuracy_if_undecided_right`), so the two numbers bound the official
  one. Nothing random is drawn. LLaVA-1.5's single-letter answers leave nothing undecided.
* Accuracies are in percent over the original questions (index < 1,000,000): `circular_accuracy`
  (the headline, LLaVA's MMBench number), per `category`, `l2-category` and `split`, and
  `vanilla_accuracy` (the original question alone, MMBench's VanillaEval), same letter rules.
* Unanswered rows are an error; with `allow_partial` a question is scored only when all of its
  copies are answered, and `skipped_questions` / `missing` say what was left out.

Predictions are matched to rows by the index as text, so answer files with integer ids
(LLaVA's) and string ids (somflow's runner) both work.

Upload file (`write_submission`), as scripts/convert_mmbench_for_submission.py: the TSV's
columns without hint, category, source, image, comment and l2-category, a `prediction` column
inserted as the 7th, one row per TSV row in TSV order, written with openpyxl to sheet "Sheet1".
Cells hold what pandas would: `index` as an integer, missing values empty, the rest as text.

Items (`MMBenchBenchmark.load_items(source)`): the TSV in the source folder (LLaVA's file name
for the language, or the folder's only .tsv). Decoded images are written once, content
addressed (<sha256 prefix>.<ext>), to `images` (default `<source>/images/<tsv name>/`), and
items point at them there: the URL is the same on every node, so answers stay valid across
Slurm tasks and reruns, and every task can read them through som.storage. Pass `images=` when
the source folder is not writable.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from som.eval.benchmarks import FormatError
from som.eval.benchmarks.seed import PROMPT_SUFFIX

if TYPE_CHECKING:
    from som.eval.items import EvalItem
    from som.eval.judge import Judge

log = logging.getLogger(__name__)

LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
INSTRUCTIONS: dict[str, str] = {"en": PROMPT_SUFFIX, "cn": "请直接回答选项字母。"}
TSV_FILES: dict[str, str] = {"en": "mmbench_dev_20230712.tsv", "cn": "mmbench_dev_cn_20231003.tsv"}
CIRCULAR_STRIDE = 1_000_000
MAX_NEW_TOKENS = 1024
"""model_vqa_mmbench.py generates up to 1024 tokens."""
UPLOAD_URL = "https://opencompass.org.cn/leaderboard-multimodal"
"""Where LLaVA's docs/Evaluation.md sends MMBench uploads."""
UPLOAD_DROPPED = ("hint", "category", "source", "image", "comment", "l2-category")
UPLOAD_PREDICTION_COLUMN = 6
REQUIRED_COLUMNS = ("index", "question", "hint", "A", "B", "image")

PANDAS_NA: frozenset[str] = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
"""Cells pandas (>= 2.0) reads as missing by default."""

_INFER_LETTERS = "ABCDE"
"""eval_mmbench.py's can_infer_option looks for A-E whatever the number of options."""
_AFFIXES: tuple[tuple[str, str], ...] = (
    ("", "."),
    ("", ","),
    ("", ":"),
    ("", ")"),
    ("", ")."),
    ("(", ")"),
    ("(", ")."),
    (":", ""),
    (":", ","),
    (":", "."),
    (":", ")"),
    (":", ")."),
)
_API_FAILURE = "Failed to obtain answer via API"
_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF8", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tif"),
    (b"MM\x00*", "tif"),
)


# --- reading the TSV -------------------------------------------------------------------------


@dataclass(frozen=True)
class TsvTable:
    """A TSV as pandas reads it: the header, and per row its line number and cells (None: NA)."""

    path: str
    header: list[str]
    rows: list[tuple[int, dict[str, str | None]]]


def read_tsv(path: str | Path) -> TsvTable:
    """Read an MMBench TSV; a row with another number of cells than the header is an error.

    Line numbers are where a row starts (a quoted cell may span lines)."""
    try:
        handle = open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise FormatError(path, f"cannot open: {exc.strerror or exc}") from exc
    # base64 images exceed csv's default 128 kB cell limit; the limit is global, so it is put back
    previous = csv.field_size_limit(2**31 - 1)
    try:
        with handle:
            reader = csv.reader(handle, delimiter="\t")
            header = next(reader, None)
            if not header:
                raise FormatError(path, "empty file: expected a header line")
            rows = []
            start = reader.line_num + 1
            for cells in reader:
                line, start = start, reader.line_num + 1
                if not cells:
                    continue
                if len(cells) != len(header):
                    raise FormatError(path, f"{len(cells)} cells, the header has {len(header)}", line)
                rows.append((line, {k: (None if v in PANDAS_NA else v) for k, v in zip(header, cells, strict=False)}))
    except csv.Error as exc:
        raise FormatError(path, f"not a readable TSV ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise FormatError(path, f"not UTF-8 text ({exc.reason})") from exc
    finally:
        csv.field_size_limit(previous)
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise FormatError(path, f"missing column(s) {', '.join(missing)}; is this an MMBench TSV?", 1)
    return TsvTable(str(path), header, rows)


@dataclass(frozen=True)
class MMBenchRow:
    """One TSV row as the prompt and the scorer need it. `options` are the cells A-D that are
    not missing (the evaluator's choices); `answer` is None in test TSVs."""

    index: int
    question: str
    hint: str | None
    options: dict[str, str]
    answer: str | None
    category: str | None
    l2_category: str | None
    split: str | None
    image: str
    line: int


def load_rows(table: TsvTable) -> list[MMBenchRow]:
    """The table's rows; repeated indices and rows without a question or image are errors."""
    rows, seen = [], set()
    for line, cells in table.rows:
        try:
            index = int(cells["index"] or "")
        except ValueError:
            raise FormatError(table.path, f"index {cells['index']!r} is not an integer", line) from None
        if index in seen:
            raise FormatError(table.path, f"index {index} appears twice", line)
        seen.add(index)
        for key in ("question", "image"):
            if cells[key] is None:
                raise FormatError(table.path, f"row {index}: empty {key!r}", line)
        answer = cells.get("answer")
        options = {letter: value for letter in LETTERS if (value := cells.get(letter)) is not None}
        if answer is not None and answer not in options:
            raise FormatError(table.path, f"row {index}: answer {answer!r} is not one of its options", line)
        rows.append(
            MMBenchRow(
                index=index,
                question=cells["question"] or "",
                hint=cells["hint"],
                options=options,
                answer=answer,
                category=cells.get("category"),
                l2_category=cells.get("l2-category"),
                split=cells.get("split"),
                image=cells["image"] or "",
                line=line,
            )
        )
    return rows


def _is_none(value: str | None) -> bool:
    """model_vqa_mmbench.py's is_none: missing, or the text "nan"/"none" in any case."""
    return value is None or value.lower() in ("nan", "none")


def prompt_options(row: MMBenchRow) -> list[str]:
    """The options model_vqa_mmbench.py shows: A, B, ... up to the first missing one."""
    shown = []
    for letter in LETTERS:
        value = row.options.get(letter)
        if value is None or _is_none(value):
            break
        shown.append(value)
    return shown


def mmbench_prompt(row: MMBenchRow, lang: str = "en") -> str:
    """The text model_vqa_mmbench.py gives the model after "<image>\\n"."""
    if lang not in INSTRUCTIONS:
        raise ValueError(f"lang must be one of {', '.join(INSTRUCTIONS)}, got {lang!r}")
    text = row.question if _is_none(row.hint) else f"{row.hint}\n{row.question}"
    for letter, option in zip(LETTERS, prompt_options(row), strict=False):
        text += f"\n{letter}. {option}"
    return f"{text}\n{INSTRUCTIONS[lang]}"


# --- answer letters --------------------------------------------------------------------------


def can_infer_option(prediction: str) -> str | None:
    """The letter eval_mmbench.py's can_infer_option finds standing alone (or in one of its
    affixes) in the prediction, or None."""
    if _API_FAILURE in prediction:
        return None
    words = [word.strip() for word in prediction.split()]

    def count(prefix: str, suffix: str) -> int:
        return sum(prefix + letter + suffix in words for letter in _INFER_LETTERS)

    maybe_article = "A" in words and len(words) > 3
    if count("", "") == 1 and not maybe_article:
        return next(letter for letter in _INFER_LETTERS if letter in words)
    for prefix, suffix in _AFFIXES:
        if count(prefix, suffix) == 1:
            return next(letter for letter in _INFER_LETTERS if prefix + letter + suffix in words)
    return None


def can_infer_text(prediction: str, choices: Mapping[str, str]) -> str | None:
    """The one option whose text (lower-cased) is inside the lower-cased prediction, or None."""
    said = prediction.lower()
    hits = [letter for letter, option in choices.items() if str(option).lower() in said]
    return hits[0] if len(hits) == 1 else None


def as_read_back(prediction: str) -> str:
    """The prediction as the evaluator reads it from the upload xlsx: NA-like text is "nan"."""
    return "nan" if prediction in PANDAS_NA else prediction


def infer_letter(prediction: str, choices: Mapping[str, str]) -> str | None:
    """The evaluator's rule-based letter (can_infer), or None where it would ask ChatGPT."""
    text = as_read_back(prediction)
    return can_infer_option(text) or can_infer_text(text, choices)


# --- scoring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MMBenchQuestion:
    """What scoring needs from one TSV row (or an item's meta)."""

    index: int
    answer: str
    choices: dict[str, str]
    category: str | None = None
    l2_category: str | None = None
    split: str | None = None


def _percent(hits: Sequence[bool]) -> float:
    return sum(hits) / len(hits) * 100 if hits else 0.0


def _per(groups: Iterable[tuple[str | None, bool]]) -> dict[str, float]:
    """Accuracy per name (sorted, as report_acc does); rows without a name are left out."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for name, hit in groups:
        if name is not None:
            hits[name].append(hit)
    return {name: _percent(hits[name]) for name in sorted(hits)}


@dataclass(frozen=True)
class MMBenchScores:
    """CircularEval and VanillaEval accuracies (percent) and what was left to a judge."""

    benchmark: str
    circular_accuracy: float
    circular_accuracy_if_undecided_right: float
    vanilla_accuracy: float
    questions: int
    rows: int
    undecided: int
    undecided_answers: int
    per_category: dict[str, float]
    per_l2_category: dict[str, float]
    per_split: dict[str, float]
    skipped_questions: int
    missing: list[str]

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["unanswered"] = len(self.missing)
        data["missing"] = self.missing[:20]
        return data


def score_mmbench(
    questions: Sequence[MMBenchQuestion],
    predictions: Mapping[str, str],
    *,
    benchmark: str = "mmbench",
    allow_partial: bool = False,
) -> MMBenchScores:
    """CircularEval over the originals among `questions` (copies found by index % 1,000,000).

    `predictions` maps str(index) -> model text. Copies whose original is not among the
    questions are ignored, as the evaluator only walks the originals."""
    groups: dict[int, list[MMBenchQuestion]] = defaultdict(list)
    for question in sorted(questions, key=lambda q: q.index):
        groups[question.index % CIRCULAR_STRIDE].append(question)
    originals = sorted(group for group, copies in groups.items() if copies[0].index == group)
    orphans = len(groups) - len(originals)
    if orphans:
        log.warning(
            "%s: the circular copies of %d questions have no original among the rows; left out", benchmark, orphans
        )
    missing = [str(q.index) for g in originals for q in groups[g] if str(q.index) not in predictions]
    if missing and not allow_partial:
        raise ValueError(
            f"{benchmark}: {len(missing)} of {sum(len(groups[g]) for g in originals)} rows have no "
            f"answer (e.g. {missing[:3]}); pass allow_partial to score the fully answered questions"
        )
    absent = set(missing)
    scored = [g for g in originals if not any(str(q.index) in absent for q in groups[g])]
    if not scored:
        raise ValueError(f"{benchmark}: no question has answers to all of its circular copies")
    circular, upper, vanilla = [], [], []
    undecided_answers = 0
    for group in scored:
        letters = [infer_letter(predictions[str(q.index)], q.choices) for q in groups[group]]
        truth = [q.answer for q in groups[group]]
        wrong = any(letter is not None and letter != gt for letter, gt in zip(letters, truth, strict=False))
        open_rows = sum(letter is None for letter in letters)
        undecided_answers += open_rows if not wrong else 0
        circular.append(not wrong and not open_rows)
        upper.append(not wrong)
        vanilla.append(letters[0] == truth[0])
    main = [groups[g][0] for g in scored]
    return MMBenchScores(
        benchmark=benchmark,
        circular_accuracy=_percent(circular),
        circular_accuracy_if_undecided_right=_percent(upper),
        vanilla_accuracy=_percent(vanilla),
        questions=len(scored),
        rows=sum(len(groups[g]) for g in scored),
        undecided=sum(u and not c for u, c in zip(upper, circular, strict=False)),
        undecided_answers=undecided_answers,
        per_category=_per((q.category, hit) for q, hit in zip(main, circular, strict=False)),
        per_l2_category=_per((q.l2_category, hit) for q, hit in zip(main, circular, strict=False)),
        per_split=_per((q.split, hit) for q, hit in zip(main, circular, strict=False)),
        skipped_questions=len(originals) - len(scored),
        missing=missing,
    )


def questions_of(rows: Sequence[MMBenchRow], path: str | Path) -> list[MMBenchQuestion]:
    """Scoring records of TSV rows; a TSV without answers (the test split) cannot be scored."""
    if any(row.answer is None for row in rows):
        raise FormatError(
            path,
            "rows without an 'answer' (the test split is scored by the MMBench server: "
            "write the upload file with `som eval submission mmbench`)",
        )
    return [
        MMBenchQuestion(row.index, row.answer or "", dict(row.options), row.category, row.l2_category, row.split)
        for row in rows
    ]


def score_mmbench_files(
    questions: str | Path, answers: str, *, lang: str = "en", allow_partial: bool = False
) -> MMBenchScores:
    """Score an answers JSONL (question_id + text, or id + answer) against an MMBench TSV.

    `lang` only names the result ("mmbench" / "mmbench_cn"): the rules are the same."""
    from som.eval.items import load_answers

    benchmark = "mmbench_cn" if lang == "cn" else "mmbench"
    records = questions_of(load_rows(read_tsv(questions)), questions)
    try:
        return score_mmbench(records, load_answers(answers), benchmark=benchmark, allow_partial=allow_partial)
    except ValueError as exc:
        raise FormatError(answers, str(exc)) from None


# --- upload file -----------------------------------------------------------------------------


def submission_table(table: TsvTable, predictions: Mapping[str, str]) -> list[list[Any]]:
    """convert_mmbench_for_submission.py's sheet (header first) for these predictions."""
    header = [name for name in table.header if name not in UPLOAD_DROPPED]
    if len(header) < UPLOAD_PREDICTION_COLUMN:
        raise FormatError(
            table.path,
            f"needs at least {UPLOAD_PREDICTION_COLUMN} columns besides "
            f"{', '.join(UPLOAD_DROPPED)} (the upload puts 'prediction' 7th)",
        )
    sheet: list[list[Any]] = [header[:UPLOAD_PREDICTION_COLUMN] + ["prediction"] + header[UPLOAD_PREDICTION_COLUMN:]]
    for line, cells in table.rows:
        try:
            index = int(cells["index"] or "")
        except ValueError:
            raise FormatError(table.path, f"index {cells['index']!r} is not an integer", line) from None
        values: list[Any] = [index if name == "index" else cells[name] for name in header]
        sheet.append(
            values[:UPLOAD_PREDICTION_COLUMN] + [predictions.get(str(index))] + values[UPLOAD_PREDICTION_COLUMN:]
        )
    return sheet


def save_sheet(sheet: list[list[Any]], out: str) -> None:
    """The sheet as the converter's xlsx (one sheet, "Sheet1"), written atomically to `out`."""
    from openpyxl import Workbook

    from som import storage

    workbook = Workbook()
    worksheet = workbook.active
    worksheet.title = "Sheet1"
    for row in sheet:
        worksheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    storage.write_bytes_atomic(out, buffer.getvalue())


def write_submission(questions: str | Path, answers: str, out: str, *, allow_partial: bool = False) -> dict[str, Any]:
    """Write the upload xlsx (atomically, any som.storage URL); returns what was written.

    Rows without an answer are an error unless `allow_partial` (then their prediction cell
    stays empty, as the converter leaves it)."""

    from som.eval.items import load_answers

    table = read_tsv(questions)
    predictions = load_answers(answers)
    sheet = submission_table(table, predictions)
    at = sheet[0].index("index")
    unanswered = [str(row[at]) for row in sheet[1:] if row[UPLOAD_PREDICTION_COLUMN] is None]
    if unanswered and not allow_partial:
        raise FormatError(
            answers,
            f"{len(unanswered)} of {len(sheet) - 1} rows of {questions} have no answer "
            f"(e.g. {unanswered[:3]}); pass allow_partial to upload them empty",
        )
    indices = {str(row[at]) for row in sheet[1:]}
    strays = [key for key in predictions if key not in indices]
    if strays:
        log.warning("%d answers in %s are for indices not in %s (e.g. %s)", len(strays), answers, questions, strays[:3])
    save_sheet(sheet, out)
    return {
        "file": out,
        "rows": len(sheet) - 1,
        "answered": len(sheet) - 1 - len(unanswered),
        "unanswered": len(unanswered),
        "missing": unanswered[:20],
        "unmatched_answers": len(strays),
        "upload_to": UPLOAD_URL,
    }


# --- items -----------------------------------------------------------------------------------


def decode_image(row: MMBenchRow, path: str) -> tuple[bytes, str]:
    """The row's image bytes and file extension (from the bytes' signature)."""
    try:
        data = base64.b64decode(row.image)
    except (binascii.Error, ValueError):
        raise FormatError(path, f"row {row.index}: 'image' is not base64", row.line) from None
    for magic, extension in _IMAGE_MAGIC:
        if data.startswith(magic):
            return data, extension
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return data, "webp"
    raise FormatError(path, f"row {row.index}: 'image' is not a JPEG/PNG/GIF/BMP/TIFF/WebP image", row.line)


def store_images(rows: Sequence[MMBenchRow], folder: str, path: str) -> dict[int, str]:
    """URL of each row's image under `folder`, writing the ones not there yet (content
    addressed, so copies sharing an image share one file and concurrent writers agree)."""
    from som import storage
    from som.eval.items import SourceError

    present = set(storage.list_images(folder))
    urls: dict[int, str] = {}
    pending: dict[str, bytes] = {}
    for row in rows:
        data, extension = decode_image(row, path)
        url = storage.join(folder, f"{hashlib.sha256(data).hexdigest()[:32]}.{extension}")
        urls[row.index] = url
        if url not in present:
            pending[url] = data
    if pending:
        try:
            storage.write_many(pending, durable=False)
        except OSError as exc:
            raise SourceError(
                f"cannot write MMBench images to {folder} ({exc}); pass images=<a writable "
                "folder or URL> (e.g. get_benchmark('mmbench', images='s3://bucket/mmbench'))"
            ) from exc
        log.info("wrote %d decoded MMBench images to %s", len(pending), folder)
    return urls


@dataclass(frozen=True)
class MMBenchBenchmark:
    """MMBench (lang "en") or MMBench-CN ("cn") for the runner; headline CircularEval accuracy.

    Arguments:
    lang: the prompt's instruction language, as model_vqa_mmbench.py --lang.
    tsv: the TSV's file name in the source (default: LLaVA's name for `lang`, else the only .tsv).
    images: folder/URL for the decoded images (default: `<source>/images/<tsv name>`).
    """

    name: str = "mmbench"
    needs_judge: bool = False
    max_new_tokens: int = MAX_NEW_TOKENS
    lang: str = "en"
    tsv: str | None = None
    images: str | None = None

    def _tsv_name(self, src: Any) -> str:
        if self.tsv is not None:
            return self.tsv
        if self.lang in TSV_FILES and src.exists(TSV_FILES[self.lang]):
            return TSV_FILES[self.lang]
        found = [name for name in src.files(suffixes=(".tsv",)) if "/" not in name]
        if len(found) != 1:
            raise FormatError(
                src.given,
                f"expected {TSV_FILES.get(self.lang, 'one .tsv file')} or a single .tsv "
                f"file, found {', '.join(found) or 'none'}; pass tsv=<file name>",
            )
        return found[0]

    def load_items(self, source: str, *, limit: int | None = None) -> list[EvalItem]:
        from som.eval.items import EvalItem, Source

        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        src = Source(source)
        name = self._tsv_name(src)
        path = src.local(name)
        rows = load_rows(read_tsv(path))[:limit]  # only these rows' images are decoded
        folder = self.images or src.url_of("images", Path(name).stem)
        images = store_images(rows, folder, str(path))
        return [
            EvalItem(
                id=str(row.index),
                prompt=mmbench_prompt(row, self.lang),
                image=images[row.index],
                meta={
                    "index": row.index,
                    "answer": row.answer,
                    "choices": row.options,
                    "category": row.category,
                    "l2_category": row.l2_category,
                    "split": row.split,
                    "tsv": str(path),
                },
            )
            for row in rows
        ]

    def score(
        self,
        items: list[EvalItem],
        answers: dict[str, str],
        *,
        judge: Judge | None = None,
        cache_url: str | None = None,
        allow_partial: bool = False,
        output_url: str | None = None,
    ) -> dict[str, object]:
        """CircularEval over the items' original questions (see the module docstring).

        With `output_url` (the runner's variant folder) the upload xlsx of these answers is
        written there too, as LLaVA's converter writes it; a split without answer letters (the
        test split) then returns only that file (headline None) instead of failing."""
        from som import storage
        from som.eval.items import answers_for

        answered = answers_for(items, answers, allow_partial=True, benchmark=self.name)
        upload = None
        if output_url is not None and items:
            out = storage.join(output_url, f"{Path(str(items[0].meta['tsv'])).stem}.xlsx")
            save_sheet(submission_table(read_tsv(items[0].meta["tsv"]), answered), out)
            upload = {"file": out, "upload_to": UPLOAD_URL}
        unknown = [item.id for item in items if item.meta.get("answer") is None]
        if unknown and upload is not None:
            return {
                "benchmark": self.name,
                "submission_only": True,
                "headline": None,
                "submission": upload,
                "answered": len(answered),
                "questions": len(items),
            }
        if unknown:
            raise ValueError(
                f"{self.name}: items without an answer letter (e.g. {unknown[:3]}): the test split is "
                "scored by the MMBench server"
            )
        questions = [
            MMBenchQuestion(
                int(item.meta["index"]),
                str(item.meta["answer"]),
                dict(item.meta["choices"]),
                item.meta.get("category"),
                item.meta.get("l2_category"),
                item.meta.get("split"),
            )
            for item in items
        ]
        scores = score_mmbench(questions, answered, benchmark=self.name, allow_partial=allow_partial)
        return {**scores.to_dict(), "headline": scores.circular_accuracy, "submission": upload}
