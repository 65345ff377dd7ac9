"""Supervised LLaVA data: JSON records from any URL to token ids, label masks and pixels.

Each record is rendered with a template (`som.train.templates`), tokenized ONCE as a whole and
masked by character offsets: a token is trained on when it holds answer text. Per-round
tokenization, LLaVA's way, goes wrong with byte-level BPE, which merges across round
boundaries (INFRA-NOTES). A token that holds both answer and prompt text, or answer text no
token covers, is a `SampleError` of kind "mismatch" naming the record: never a silently
all-masked sample, which is what LLaVA falls back to.

Each ``<image>`` becomes the processor's N image tokens (what `LlavaProcessor.__call__` does
and what `LlavaForConditionalGeneration` checks against its image features). Truncation to
`max_length` may cut text after the image, never into the image tokens ("too_long"), and must
leave a trained token ("no_target").

Records are prepared lazily, one per `__getitem__`: images are read through `som.storage`
(local paths, file://, s3://), padded to a square of the image processor's mean colour as
LLaVA-1.5 does (``image_aspect_ratio="pad"``), then processed. `SupervisedDataset.validate`
tokenizes every record once up front (no image decoding), drops and reports bad ones, and
fails the run when they are more than a threshold.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from som import storage
from som.images import ImageLoadError, decode_image, expand2square
from som.train.templates import IMAGE_TOKEN, Span, get_template, render

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
ERROR_KINDS = ("malformed", "mismatch", "too_long", "no_target", "image")
MAX_EXAMPLES = 5
VALIDATE_BATCH = 512
"""Records tokenized per call in `validate`: the fast tokenizer's batch path is parallel."""
_LAST_SPACE = 0x3000  # the highest code point str.isspace() accepts
_IS_SPACE = np.array([chr(c).isspace() for c in range(_LAST_SPACE + 1)] + [False])  # then "other"


# ----------------------------------------------------------------------------- errors


_ORIGIN = re.compile(r"\[(\w+)\] sample ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"): ")


class SampleError(ValueError):
    """One record that cannot be trained on; `kind` is one of ERROR_KINDS.

    Built from a bare message (as DataLoader workers re-raise exceptions, and as pickling
    does), `kind` and `sample_id` are read back from it, so they survive worker processes."""

    def __init__(self, message: str, *, kind: str | None = None, sample_id: str | None = None) -> None:
        if kind is not None:
            message = f"[{kind}] sample {str(sample_id)!r}: {message}"
        else:
            found = _ORIGIN.findall(message)
            kind, quoted = found[-1] if found else ("unknown", "'?'")
            sample_id = ast.literal_eval(quoted)
        super().__init__(message)
        self.kind = kind
        self.sample_id = str(sample_id)


@dataclass
class DataReport:
    """What `validate` found: records in the file, records kept, and the ids left out by kind."""

    total: int
    used: int
    errors: dict[str, list[str]] = field(default_factory=dict)
    truncated: list[str] = field(default_factory=list)  # kept, text cut at max_length
    examples: dict[str, list[str]] = field(default_factory=dict)  # first messages of each kind

    def add(self, error: SampleError) -> None:
        """Count a rejected record; the first few messages of each kind are kept as examples."""
        self.errors.setdefault(error.kind, []).append(error.sample_id)
        examples = self.examples.setdefault(error.kind, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(str(error))

    @property
    def error_fraction(self) -> float:
        return sum(len(ids) for ids in self.errors.values()) / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "used": self.used,
            "error_fraction": self.error_fraction,
            "errors": {kind: list(ids) for kind, ids in self.errors.items()},
            "truncated": list(self.truncated),
            "examples": {kind: list(messages) for kind, messages in self.examples.items()},
        }

    def summary(self, max_ids: int = 10) -> str:
        """One line per kind with its first ids, for logs and error messages."""
        lines = [
            f"{self.used}/{self.total} records usable ({self.error_fraction:.2%} rejected, "
            f"{len(self.truncated)} truncated)"
        ]
        for kind, ids in self.errors.items():
            more = f" and {len(ids) - max_ids} more" if len(ids) > max_ids else ""
            lines.append(f"  {kind}: {len(ids)}: {', '.join(ids[:max_ids])}{more}")
            lines.extend(f"    e.g. {message}" for message in self.examples.get(kind, [])[:2])
        return "\n".join(lines)


class DataQualityError(RuntimeError):
    """More records were rejected than the run allows; `report` says which and why."""

    def __init__(self, report: DataReport, max_error_fraction: float) -> None:
        super().__init__(
            f"training data rejected: {report.error_fraction:.2%} of records are bad "
            f"(allowed: {max_error_fraction:.2%}); fix or drop them, or raise the "
            f"threshold\n{report.summary()}"
        )
        self.report = report
        self.max_error_fraction = max_error_fraction

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.report, self.max_error_fraction)


# ----------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Encoded:
    """Token ids and labels of one sample, and its length before truncation."""

    input_ids: np.ndarray
    labels: np.ndarray
    full_length: int

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.input_ids)


def _require_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; label masking needs "
            "character offsets (return_offsets_mapping)"
        )


def _image_token_id(tokenizer: Any, image_token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(image_token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer has no {image_token!r} token")
    return int(token_id)


def tokenize_supervised(
    text: str,
    spans: Sequence[Span],
    tokenizer: Any,
    *,
    max_length: int,
    image_token: str = IMAGE_TOKEN,
    image_seq_length: int,
) -> tuple[list[int], list[int]]:
    """Input ids and labels (IGNORE_INDEX outside `spans`) of a rendered conversation.

    Special tokens are the tokenizer's own, as the processor adds them (Llama's ``<s>`` in
    front, like LLaVA) and never trained on. Each `image_token` becomes `image_seq_length`
    copies. Raises SampleError (kinds mismatch, too_long, no_target)."""
    _require_fast(tokenizer)
    encoding = tokenizer(text, return_offsets_mapping=True)
    encoded = supervise(
        text,
        spans,
        encoding["input_ids"],
        encoding["offset_mapping"],
        image_token=image_token,
        image_token_id=_image_token_id(tokenizer, image_token),
        image_seq_length=image_seq_length,
        max_length=max_length,
    )
    return encoded.input_ids.tolist(), encoded.labels.tolist()


def supervise(
    text: str,
    spans: Sequence[Span],
    ids: Sequence[int],
    offsets: Sequence[Sequence[int]],
    *,
    image_token: str,
    image_token_id: int,
    image_seq_length: int,
    max_length: int,
    sample_id: str = "?",
) -> Encoded:
    """Labels from one tokenization of `text` (ids and character offsets), image tokens
    expanded, truncated to `max_length`; see `tokenize_supervised`."""
    token_ids = np.asarray(ids, dtype=np.int64)
    token_offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    is_image = token_ids == image_token_id
    if int(is_image.sum()) != text.count(image_token):
        raise SampleError(
            f"{text.count(image_token)} {image_token} in the text became {int(is_image.sum())} image tokens",
            kind="mismatch",
            sample_id=sample_id,
        )
    trained = _trained_tokens(text, spans, token_offsets, sample_id)
    if (trained & is_image).any():
        raise SampleError(f"an {image_token} lies inside an answer", kind="mismatch", sample_id=sample_id)
    repeats = np.where(is_image, image_seq_length, 1)
    token_ids, trained = np.repeat(token_ids, repeats), np.repeat(trained, repeats)
    full_length = len(token_ids)
    if full_length > max_length:
        image_positions = np.flatnonzero(token_ids == image_token_id)
        if image_positions.size and image_positions[-1] >= max_length:
            raise SampleError(
                f"{full_length} tokens with image tokens up to position "
                f"{image_positions[-1]}: max_length {max_length} would cut the image",
                kind="too_long",
                sample_id=sample_id,
            )
        token_ids, trained = token_ids[:max_length], trained[:max_length]
    if not trained.any():
        where = f" within max_length {max_length} (of {full_length} tokens)" if full_length > max_length else ""
        raise SampleError(f"no answer token to train on{where}", kind="no_target", sample_id=sample_id)
    return Encoded(token_ids, np.where(trained, token_ids, IGNORE_INDEX), full_length)


def _trained_tokens(text: str, spans: Sequence[Span], offsets: np.ndarray, sample_id: str) -> np.ndarray:
    """Which tokens hold answer text. Whitespace just before an answer is the answer's, as in
    LLaVA's ``preprocess_v1``, whose instruction ends at "ASSISTANT:" (so a lone " " token is
    trained); whitespace at a span's edge may also go with the prompt's token. Anything else
    straddling an edge is a mismatch."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    inside = np.zeros(len(text), dtype=bool)
    for start, end in spans:
        while start > 0 and text[start - 1].isspace():
            start -= 1
        inside[start:end] = True
    solid = ~_IS_SPACE[np.minimum(codes, _LAST_SPACE + 1)]

    def counts(mask: np.ndarray) -> np.ndarray:  # characters of `mask` in each token
        cumulative = np.concatenate([[0], np.cumsum(mask)])
        return cumulative[offsets[:, 1]] - cumulative[offsets[:, 0]]

    answer_solid, prompt_solid, answer_all = counts(inside & solid), counts(~inside & solid), counts(inside)
    width = offsets[:, 1] - offsets[:, 0]
    trained = (answer_solid > 0) | ((width > 0) & (answer_all == width))
    straddling = np.flatnonzero((answer_solid > 0) & (prompt_solid > 0))
    if straddling.size:
        start, end = offsets[straddling[0]]
        raise SampleError(
            f"token {straddling[0]} ({text[start:end]!r}, characters {start}-{end}) holds both prompt and answer text",
            kind="mismatch",
            sample_id=sample_id,
        )
    edges = np.zeros(len(text) + 1, dtype=np.int64)
    np.add.at(edges, offsets[trained, 0], 1)
    np.add.at(edges, offsets[trained, 1], -1)
    uncovered = np.flatnonzero(inside & solid & (np.cumsum(edges)[:-1] == 0))
    if uncovered.size:
        raise SampleError(
            f"answer text at character {uncovered[0]} ({text[uncovered[0]]!r}) is in no token",
            kind="mismatch",
            sample_id=sample_id,
        )
    return trained


def image_seq_length(processor: Any) -> int:
    """How many image tokens the processor puts in place of one ``<image>``, counted on a real
    call so that its own rule (patches, CLS token, feature strategy) is what we train with."""
    token = getattr(processor, "image_token", IMAGE_TOKEN)
    crop = getattr(processor.image_processor, "crop_size", None) or {}
    size = (int(crop.get("width", 32)), int(crop.get("height", 32)))
    ids = processor(text=token, images=Image.new("RGB", size))["input_ids"][0]
    return sum(1 for i in ids if i == _image_token_id(processor.tokenizer, token))


def check_against_processor(processor: Any, template: str, seq_length: int) -> None:
    """Our ids for a probe conversation must be the processor's own (special tokens, image
    expansion), or what we mask is not what the model is given: fail before training."""
    text, spans = render(
        [{"from": "human", "value": f"{IMAGE_TOKEN}\nWhat is this?"}, {"from": "gpt", "value": "A probe."}], template
    )
    ours, _ = tokenize_supervised(
        text, spans, processor.tokenizer, max_length=len(text) + seq_length + 8, image_seq_length=seq_length
    )
    theirs = list(processor(text=text, images=Image.new("RGB", (32, 32)))["input_ids"][0])
    if ours != theirs:
        raise ValueError(
            f"token ids of a probe conversation differ from the processor's "
            f"({len(ours)} vs {len(theirs)} tokens): {ours[:12]}... vs {theirs[:12]}..."
        )


# ----------------------------------------------------------------------------- images


# ----------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class Scan:
    """What `SupervisedDataset.scan` found: the usable records' positions, their signed token
    lengths (negative without an image) and the report."""

    kept: np.ndarray
    lengths: np.ndarray
    report: DataReport


class SupervisedDataset(torch.utils.data.Dataset):
    """LLaVA records for training, prepared one at a time.

    Arguments:
        records: LLaVA JSON records (``id``, optional ``image``, ``conversations``).
        processor: a LlavaProcessor (fast tokenizer + image processor).
        image_root: URL or folder that relative image paths are under.
        template: a `som.train.templates` name ("vicuna_v1", or "plain" for stage 1).
        max_length: tokens per sample after image expansion.
        pad_to_square: pad images to a square of the mean colour before processing.
        storage_options: `som.storage` options for the images (S3 settings)."""

    def __init__(
        self,
        records: list[dict],
        processor: Any,
        *,
        image_root: str | None = None,
        template: str = "vicuna_v1",
        max_length: int = 2048,
        pad_to_square: bool = True,
        storage_options: dict | None = None,
    ) -> None:
        self.records = records
        self.processor = processor
        self.tokenizer = processor.tokenizer
        _require_fast(self.tokenizer)
        self.template = get_template(template)
        image_token = getattr(processor, "image_token", IMAGE_TOKEN)
        if image_token != IMAGE_TOKEN:
            raise ValueError(f"the processor's image token is {image_token!r}; LLaVA data uses {IMAGE_TOKEN!r}")
        self.image_token_id = _image_token_id(self.tokenizer, IMAGE_TOKEN)
        self.image_seq_length = image_seq_length(processor)
        check_against_processor(processor, self.template.name, self.image_seq_length)
        self.max_length = max_length
        self.pad_to_square = pad_to_square
        self.image_root = image_root
        self.storage_options = storage_options
        mean = processor.image_processor.image_mean
        self.pad_colour = tuple(int(x * 255) for x in mean)  # LLaVA's background colour
        self._index = np.arange(len(records))
        self._lengths: np.ndarray | None = None  # exact token counts once validated
        self.report: DataReport | None = None

    @classmethod
    def from_url(cls, data_url: str, processor: Any, **kwargs: Any) -> SupervisedDataset:
        """Records from a LLaVA JSON array at any `som.storage` URL (s3://, file://, a path)."""
        raw = storage.read_bytes(data_url, kwargs.get("storage_options"))
        try:
            records = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{data_url} is not valid JSON: {exc}") from exc
        if not isinstance(records, list):
            raise ValueError(f"{data_url} must hold a JSON array of LLaVA records")
        log.info("read %d records from %s", len(records), data_url)
        return cls(records, processor, **kwargs)

    # ------------------------------------------------------------------ records

    def sample_id(self, record_index: int) -> str:
        record = self.records[record_index]
        record_id = record.get("id") if isinstance(record, Mapping) else None
        return str(record_id) if record_id not in (None, "") else f"#{record_index}"

    def _prepare(self, record_index: int) -> tuple[str, list[Span], str | None]:
        """(text, supervised spans, image path or None) of a record, or SampleError(malformed)."""
        record, sample_id = self.records[record_index], self.sample_id(record_index)
        if not isinstance(record, Mapping):
            raise SampleError("not a JSON object", kind="malformed", sample_id=sample_id)
        image = record.get("image")
        if isinstance(image, list) and len(image) == 1:
            image = image[0]
        if image is not None and (not isinstance(image, str) or not image):
            raise SampleError(f"image must be one path, got {image!r}", kind="malformed", sample_id=sample_id)
        try:
            text, spans = render(record.get("conversations", []), self.template)  # render checks the JSON value
        except ValueError as exc:
            raise SampleError(str(exc), kind="malformed", sample_id=sample_id) from None
        if (IMAGE_TOKEN in text) != (image is not None):
            problem = f"no {IMAGE_TOKEN} in its first question" if image else f"{IMAGE_TOKEN} but no image"
            raise SampleError(f"a record with {problem}", kind="malformed", sample_id=sample_id)
        return text, spans, image

    def _supervise(self, text: str, spans: list[Span], ids: Sequence[int], offsets: Any, sample_id: str) -> Encoded:
        return supervise(
            text,
            spans,
            ids,
            offsets,
            image_token=IMAGE_TOKEN,
            image_token_id=self.image_token_id,
            image_seq_length=self.image_seq_length,
            max_length=self.max_length,
            sample_id=sample_id,
        )

    def validate(self, max_error_fraction: float = 0.01) -> DataReport:
        """Tokenize every record once (images are not read), keep the good ones and report the
        others by kind and id. Raises DataQualityError when more than `max_error_fraction` of
        the records, or all of them, are bad."""
        return self.apply_scan(self.scan(), max_error_fraction)

    def scan(self) -> Scan:
        """The work of `validate` without changing the dataset: which records are usable, their
        token lengths and the report. Distributed runs scan on one rank and send the result to
        the others (`apply_scan`), instead of every rank tokenizing the whole file."""
        report = DataReport(total=len(self.records), used=0)
        kept: list[int] = []
        lengths: list[int] = []
        for start in range(0, len(self.records), VALIDATE_BATCH):
            prepared = []
            for record_index in range(start, min(start + VALIDATE_BATCH, len(self.records))):
                try:
                    prepared.append((record_index, *self._prepare(record_index)))
                except SampleError as exc:
                    report.add(exc)
            if not prepared:
                continue
            batch = self.tokenizer([p[1] for p in prepared], return_offsets_mapping=True)
            for (record_index, text, spans, image), ids, offsets in zip(
                prepared, batch["input_ids"], batch["offset_mapping"], strict=False
            ):
                sample_id = self.sample_id(record_index)
                try:
                    encoded = self._supervise(text, spans, ids, offsets, sample_id)
                except SampleError as exc:
                    report.add(exc)
                    continue
                kept.append(record_index)
                lengths.append(len(encoded.input_ids) if image else -len(encoded.input_ids))
                if encoded.truncated:
                    report.truncated.append(sample_id)
        report.used = len(kept)
        return Scan(np.asarray(kept, dtype=np.int64), np.asarray(lengths, dtype=np.int64), report)

    def apply_scan(self, scan: Scan, max_error_fraction: float = 0.01) -> DataReport:
        """Keep the records `scan` found usable; raise DataQualityError as `validate` does."""
        if scan.report.total != len(self.records):
            raise ValueError(
                f"the scan covers {scan.report.total} records, this dataset has "
                f"{len(self.records)}: it was made from another file"
            )
        self._index, self._lengths, self.report = scan.kept, scan.lengths, scan.report
        report = scan.report
        log.log(logging.WARNING if report.errors else logging.INFO, "training data: %s", report.summary())
        if report.error_fraction > max_error_fraction or (self.records and not report.used):
            raise DataQualityError(report, max_error_fraction)
        return report

    @property
    def modality_lengths(self) -> list[int]:
        """Per sample: its length, positive with an image and negative without (LLaVA's
        convention for the modality-grouped sampler). Exact token counts after `validate`,
        LLaVA's word-count estimate before."""
        if self._lengths is not None:
            return self._lengths.tolist()
        return [_word_length(self.records[record_index]) for record_index in self._index]

    # ------------------------------------------------------------------ samples

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"index {i!r} is not an int (pass ModalityLengthGroupedSampler as batch_sampler=)")
        record_index = int(self._index[i])
        sample_id = self.sample_id(record_index)
        text, spans, image = self._prepare(record_index)
        encoding = self.tokenizer(text, return_offsets_mapping=True)
        encoded = self._supervise(text, spans, encoding["input_ids"], encoding["offset_mapping"], sample_id)
        return {
            "id": sample_id,
            "input_ids": torch.from_numpy(encoded.input_ids),
            "labels": torch.from_numpy(encoded.labels),
            "pixel_values": self._pixels(image, sample_id) if image is not None else None,
        }

    def image_url(self, image: str) -> str:
        """Where a record's image is: absolute paths and URLs as they are, others under image_root."""
        if self.image_root is None or "://" in image or os.path.isabs(image):
            return image
        return storage.join(self.image_root, image)

    def _pixels(self, image: str, sample_id: str) -> torch.Tensor:
        """Pixel values of a record's image; missing or unreadable is SampleError(image), while
        other storage errors (network, permissions) propagate for the caller to retry or stop."""
        url = image
        try:
            url = self.image_url(image)
            rgb = decode_image(storage.read_bytes(url, self.storage_options), url).rgb
        except (ImageLoadError, FileNotFoundError, IsADirectoryError, ValueError) as exc:
            raise SampleError(f"image {url}: {exc}", kind="image", sample_id=sample_id) from exc
        picture = Image.fromarray(rgb)
        if self.pad_to_square:
            picture = expand2square(picture, self.pad_colour)
        processed = self.processor.image_processor(images=picture, return_tensors="pt")
        return processed["pixel_values"][0]


def _word_length(record: Any) -> int:
    """LLaVA's cheap length: words in all turns, signed by modality (never 0)."""
    if not isinstance(record, Mapping) or not isinstance(record.get("conversations"), list):
        return -1
    turns = [t for t in record["conversations"] if isinstance(t, Mapping)]
    words = max(1, sum(len(str(t.get("value", "")).split()) for t in turns))
    return words if record.get("image") else -words


class SupervisedCollator:
    """Right-pads a list of samples into a batch; pixel values only for samples with an image
    (in batch order, as Llava matches them to the image tokens), none when no sample has one."""

    def __init__(self, pad_token_id: int, ignore_index: int = IGNORE_INDEX) -> None:
        if pad_token_id is None:
            raise ValueError("pad_token_id is None: give the tokenizer a pad token first")
        self.pad_token_id = int(pad_token_id)
        self.ignore_index = ignore_index

    def __call__(self, batch: list[dict]) -> dict[str, Any]:
        if not batch:
            raise ValueError("cannot collate an empty batch")
        longest = max(len(sample["input_ids"]) for sample in batch)
        input_ids = torch.full((len(batch), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), longest), self.ignore_index, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, sample in enumerate(batch):
            length = len(sample["input_ids"])
            input_ids[row, :length] = sample["input_ids"]
            labels[row, :length] = sample["labels"]
            attention_mask[row, :length] = 1
        out: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "ids": [sample["id"] for sample in batch],
        }
        images = [sample["pixel_values"] for sample in batch if sample.get("pixel_values") is not None]
        if images:
            out["pixel_values"] = torch.stack(images)
        return out
