"""Supervised LLaVA data on the tiny Llava's real processor: exact label masks, ids equal to the
processor's, bad records counted by id, images from local files and S3, collation, and a batch
the tiny model trains on."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from som import storage
from som.train.data import (
    IGNORE_INDEX,
    DataQualityError,
    SampleError,
    SupervisedCollator,
    SupervisedDataset,
    check_against_processor,
    image_seq_length,
    tokenize_supervised,
)
from som.train.sampler import ModalityLengthGroupedSampler
from som.train.templates import render

N_IMAGE = 16  # (32 px / patch 8)^2 + CLS - CLS ("default" strategy drops it)


@pytest.fixture(scope="module")
def llava_folder(tiny_llava: str) -> str:
    """The tiny Llava saved once per session (tests/plugins/training.py)."""
    return tiny_llava


def load_processor(folder: str) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder)


@pytest.fixture(scope="module")
def processor(llava_folder: str) -> Any:
    return load_processor(llava_folder)


def turns(*values: str) -> list[dict]:
    return [{"from": "human" if k % 2 == 0 else "gpt", "value": v} for k, v in enumerate(values)]


def record(rid: str, *values: str, image: str | None = None) -> dict:
    out: dict[str, Any] = {"id": rid, "conversations": turns(*values)}
    if image is not None:
        out["image"] = image
    return out


def png(width: int, height: int, colour: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def supervised_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    """The contiguous runs of trained tokens."""
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(ids, labels, strict=False):
        trained = label != IGNORE_INDEX
        if trained:
            assert label == token
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = trained
    return runs


# ----------------------------------------------------------------------------- masks

MASK_CASES = {
    "single turn": (
        turns("Describe the scene.", "A busy street in a city."),
        "vicuna_v1",
        [["ĠA", "Ġbusy", "Ġstreet", "Ġin", "Ġa", "Ġcity", ".", "</s>"]],
    ),
    "multi turn with image": (
        turns(
            "What is the man doing?\n<image>",
            "He is ironing clothes.",
            "How many cars are there?",
            "There are two yellow cars.",
        ),
        "vicuna_v1",
        [
            ["ĠHe", "Ġis", "Ġironing", "Ġclothes", ".", "</s>"],
            ["ĠThere", "Ġare", "Ġtwo", "Ġyellow", "Ġcars", ".", "</s>"],
        ],
    ),
    "multi turn text only": (
        turns("Is there a dog?", "No, there is a person.", "How many cars?", "Two."),
        "vicuna_v1",
        [["ĠNo", ",", "Ġthere", "Ġis", "Ġa", "Ġperson", ".", "</s>"], ["Ġ", "T", "wo", ".", "</s>"]],
    ),
    "plain": (turns("<image>\nDescribe the image.", "A busy street."), "plain", [["A", "Ġbusy", "Ġstreet", ".", "Ċ"]]),
}


@pytest.mark.parametrize("case", MASK_CASES)
def test_exact_masks(processor: Any, case: str) -> None:
    conversation, template, expected_runs = MASK_CASES[case]
    tokenizer = processor.tokenizer
    text, spans = render(conversation, template)
    ids, labels = tokenize_supervised(text, spans, tokenizer, max_length=2048, image_seq_length=N_IMAGE)
    assert len(ids) == len(labels)
    runs = supervised_runs(ids, labels)
    assert [tokenizer.convert_ids_to_tokens(run) for run in runs] == expected_runs
    # the trained runs are exactly the last tokens of each answer round
    ends = [k for k, token in enumerate(ids) if token == tokenizer.eos_token_id] or [len(ids) - 1]
    for run, end in zip(runs, ends, strict=False):
        assert ids[end - len(run) + 1 : end + 1] == run
    answers = [t["value"] for t in conversation[1::2]]
    decoded = [tokenizer.decode(run) for run in runs]
    if template == "plain":
        assert decoded == [answers[0] + "\n"]
    else:
        assert decoded == [f" {answer}</s>" for answer in answers]
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert ids.count(image_id) == (N_IMAGE if "<image>" in text else 0)
    assert all(label == IGNORE_INDEX for token, label in zip(ids, labels, strict=False) if token == image_id)


def test_two_turn_image_conversation_trains_exactly_each_answer_and_its_eos(processor: Any) -> None:
    """LLaVA's preprocess_v1 on "{system} USER: <image>\\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:
    A2</s>": everything up to each "ASSISTANT:" is masked, each answer and its </s> is trained."""
    tokenizer = processor.tokenizer
    text, spans = render(turns("<image>\nQ1", "A1", "Q2", "A2"), "vicuna_v1")
    assert text.endswith(" USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>")
    ids, labels = tokenize_supervised(text, spans, tokenizer, max_length=2048, image_seq_length=N_IMAGE)
    runs = supervised_runs(ids, labels)
    assert [tokenizer.decode(run).lstrip() for run in runs] == ["A1</s>", "A2</s>"]
    masked = tokenizer.decode(
        [
            t
            for t, label in zip(ids, labels, strict=False)
            if label == IGNORE_INDEX and t != tokenizer.convert_tokens_to_ids("<image>")
        ]
    )
    assert masked.replace(" ", "") == text.replace("<image>", "").replace("A1</s>", "").replace("A2</s>", "").replace(
        " ", ""
    )


def test_image_seq_length_is_what_the_processor_expands_to(processor: Any) -> None:
    assert image_seq_length(processor) == N_IMAGE


@pytest.mark.parametrize("case", MASK_CASES)
@pytest.mark.parametrize("bos", [False, True], ids=["tokenizer as built", "llama-style bos"])
def test_ids_equal_the_processors(llava_folder: str, case: str, bos: bool) -> None:
    processor = load_processor(llava_folder)
    processor.tokenizer.add_bos_token = bos
    conversation, template, _ = MASK_CASES[case]
    text, spans = render(conversation, template)
    ids, labels = tokenize_supervised(
        text, spans, processor.tokenizer, max_length=2048, image_seq_length=image_seq_length(processor)
    )
    images = Image.new("RGB", (48, 32)) if "<image>" in text else None
    assert ids == processor(text=text, images=images)["input_ids"][0]
    assert (ids[0] == processor.tokenizer.bos_token_id) is bos
    assert labels[0] == IGNORE_INDEX


def test_ids_disagreeing_with_the_processor_stop_the_run_before_training(processor: Any) -> None:
    check_against_processor(processor, "vicuna_v1", N_IMAGE)
    with pytest.raises(ValueError, match="differ from the processor's"):
        check_against_processor(processor, "plain", N_IMAGE - 1)  # one image token short


def test_a_token_across_prompt_and_answer_is_a_mismatch(llava_folder: str) -> None:
    processor = load_processor(llava_folder)
    processor.tokenizer.add_tokens(["T: Yes"])  # an added token merging "ASSISTANT:" and the answer
    text, spans = render(turns("Is it?", "Yes, it is."), "vicuna_v1")
    with pytest.raises(SampleError, match=r"'T: Yes'.*holds both prompt and answer") as info:
        tokenize_supervised(text, spans, processor.tokenizer, max_length=2048, image_seq_length=N_IMAGE)
    assert info.value.kind == "mismatch"


def test_truncation_never_cuts_the_image_and_keeps_a_target(processor: Any) -> None:
    tokenizer = processor.tokenizer
    text, spans = render(turns("<image>\nWhat is the man doing?", "He is ironing clothes."), "vicuna_v1")
    full, _ = tokenize_supervised(text, spans, tokenizer, max_length=4096, image_seq_length=N_IMAGE)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    image_end = max(k for k, token in enumerate(full) if token == image_id) + 1
    with pytest.raises(SampleError, match="would cut the image") as info:
        tokenize_supervised(text, spans, tokenizer, max_length=image_end - 1, image_seq_length=N_IMAGE)
    assert info.value.kind == "too_long"
    with pytest.raises(SampleError, match="no answer token") as info:
        tokenize_supervised(text, spans, tokenizer, max_length=image_end + 2, image_seq_length=N_IMAGE)
    assert info.value.kind == "no_target"
    cut = len(full) - 2  # text after the image may go: the answer loses "." and "</s>"
    ids, labels = tokenize_supervised(text, spans, tokenizer, max_length=cut, image_seq_length=N_IMAGE)
    assert ids == full[:cut] and labels[-1] == ids[-1]
    trained = tokenizer.convert_ids_to_tokens(supervised_runs(ids, labels)[0])
    assert trained == ["ĠHe", "Ġis", "Ġironing", "Ġclothes"]


def test_sample_error_keeps_kind_and_id_through_pickling_and_worker_messages() -> None:
    error = SampleError("image s3://b/x.jpg: truncated", kind="image", sample_id="it's-7")
    for copy in (
        pickle.loads(pickle.dumps(error)),
        SampleError(
            f"Caught SampleError in DataLoader worker process 0.\nOriginal "
            f"Traceback (most recent call last):\n  ...\n{type(error).__name__}: {error}"
        ),
    ):
        assert (copy.kind, copy.sample_id) == ("image", "it's-7")
        assert "s3://b/x.jpg" in str(copy)


# ----------------------------------------------------------------------------- validate


def test_validate_counts_bad_records_by_id_and_enforces_the_threshold(llava_folder: str, tmp_path: Path) -> None:
    processor = load_processor(llava_folder)
    processor.tokenizer.add_tokens(["T: Yes"])
    good = [record(f"t{k}", "Describe the scene.", "A busy street in a city.") for k in range(6)]
    records = good + [
        record("cut", "Describe the scene.", "A busy street in a city. " * 4),
        record("img-long", "<image>\nWhat is the man doing?", "Ironing.", image="a.png"),
        record("no-answer", "Describe the scene. " * 4, "A busy street."),
        record("yes", "Is it?", "Yes, it is."),
        {"id": "gpt-first", "conversations": turns("q", "a")[::-1]},
        record("no-image-token", "What is it?", "A dog.", image="a.png"),
    ]
    dataset = SupervisedDataset(records, processor, image_root=str(tmp_path), max_length=132)
    with pytest.raises(DataQualityError, match=r"41\.67% of records are bad") as info:
        dataset.validate(max_error_fraction=0.4)
    expected = {
        "too_long": ["img-long"],
        "no_target": ["no-answer"],
        "mismatch": ["yes"],
        "malformed": ["gpt-first", "no-image-token"],
    }
    assert info.value.report.errors == expected
    assert "gpt-first" in str(info.value) and "turn 0 must be from 'human'" in str(info.value)
    assert info.value.report.examples["too_long"] == [
        "[too_long] sample 'img-long': 149 tokens with image tokens up to position 132: "
        "max_length 132 would cut the image"
    ]
    assert pickle.loads(pickle.dumps(info.value)).report == info.value.report

    report = dataset.validate(max_error_fraction=0.5)
    assert (report.total, report.used, report.errors, report.truncated) == (12, 7, expected, ["cut"])
    assert set(report.as_dict()["examples"]) == set(expected)
    assert report.as_dict()["error_fraction"] == pytest.approx(5 / 12)
    assert [dataset[k]["id"] for k in range(len(dataset))] == [f"t{k}" for k in range(6)] + ["cut"]
    assert len(dataset[6]["input_ids"]) == 132
    lengths = dataset.modality_lengths
    assert lengths == [-len(dataset[k]["input_ids"]) for k in range(len(dataset))]  # exact, text-only


def test_validate_fails_when_nothing_is_usable(processor: Any) -> None:
    dataset = SupervisedDataset([record("x", "q")], processor)
    with pytest.raises(DataQualityError) as info:
        dataset.validate(max_error_fraction=1.0)
    assert info.value.report.errors == {"malformed": ["x"]}


def test_a_scan_sent_to_another_rank_gives_the_same_dataset_and_is_checked(processor: Any) -> None:
    """Distributed runs scan on rank 0 and apply the (pickled) scan on every rank."""
    records = [record(f"t{k}", "Describe the scene.", "A busy street.") for k in range(3)]
    records.append(record("bad", "q"))
    scanned, validated = (SupervisedDataset(records, processor) for _ in range(2))
    report = scanned.apply_scan(pickle.loads(pickle.dumps(scanned.scan())), max_error_fraction=0.5)
    assert report == validated.validate(max_error_fraction=0.5)
    assert len(scanned) == len(validated) == 3 and scanned.modality_lengths == validated.modality_lengths
    other = SupervisedDataset(records[:2], processor)
    with pytest.raises(ValueError, match="made from another file"):
        other.apply_scan(scanned.scan())


def test_modality_lengths_before_validation_are_llavas_word_counts(processor: Any) -> None:
    dataset = SupervisedDataset(
        [record("a", "<image>\nTwo words", "three more words", image="a.png"), record("b", "one", "two words")],
        processor,
    )
    assert dataset.modality_lengths == [6, -3]  # "<image>" is a word to str.split, as in LLaVA


# ----------------------------------------------------------------------------- images


def test_item_pads_to_square_with_the_mean_colour_and_matches_the_processor(processor: Any, tmp_path: Path) -> None:
    (tmp_path / "wide.png").write_bytes(png(64, 32))  # red, twice as wide as high
    conversation = turns("<image>\nWhat colour is it?", "Red.")
    dataset = SupervisedDataset(
        [{"id": "w", "image": "wide.png", "conversations": conversation}], processor, image_root=str(tmp_path)
    )
    item = dataset[0]
    pixels = item["pixel_values"]
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32
    mean = torch.tensor(processor.image_processor.image_mean).view(3, 1)
    std = torch.tensor(processor.image_processor.image_std).view(3, 1)
    red = (torch.tensor([1.0, 0.0, 0.0]).view(3, 1) - mean) / std
    # the image covers rows 8-23; rows away from its edge (bicubic reaches 2 rows) are the
    # padding, the mean colour: about 0 once normalised
    for row in (0, 5, 26, 31):
        assert torch.allclose(pixels[:, row, :], torch.zeros(3, 32), atol=0.02), row
    assert torch.allclose(pixels[:, 16, :], red.expand(3, 32), atol=0.02)

    square = Image.new("RGB", (64, 64), tuple(int(x * 255) for x in processor.image_processor.image_mean))
    square.paste(Image.new("RGB", (64, 32), (255, 0, 0)), (0, 16))
    expected = processor(text=render(conversation, "vicuna_v1")[0], images=square, return_tensors="pt")
    assert torch.equal(item["input_ids"], expected["input_ids"][0])
    assert torch.allclose(pixels, expected["pixel_values"][0])

    cropped = SupervisedDataset(dataset.records, processor, image_root=str(tmp_path), pad_to_square=False)
    assert torch.allclose(cropped[0]["pixel_values"][:, 0, :], red.expand(3, 32), atol=0.02)


def test_bad_or_missing_image_names_the_sample_and_the_path(processor: Any, tmp_path: Path) -> None:
    (tmp_path / "cut.png").write_bytes(png(40, 40)[:60])
    records = [
        record("corrupt", "<image>\nq", "a", image="cut.png"),
        record("missing", "<image>\nq", "a", image="nowhere.png"),
    ]
    dataset = SupervisedDataset(records, processor, image_root=str(tmp_path))
    dataset.validate()  # images are not read here
    for index, (sample_id, name) in enumerate([("corrupt", "cut.png"), ("missing", "nowhere.png")]):
        with pytest.raises(SampleError) as info:
            dataset[index]
        assert (info.value.kind, info.value.sample_id) == ("image", sample_id)
        assert str(tmp_path / name) in str(info.value)


def test_from_url_reads_a_local_file(processor: Any, tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(png(32, 32))
    data = tmp_path / "mix.json"
    data.write_text(json.dumps([record("1", "<image>\nq?", "A dog.", image="a.png"), record("2", "Hi?", "Hello.")]))
    dataset = SupervisedDataset.from_url(f"file://{data}", processor, image_root=str(tmp_path / "images"))
    assert dataset.validate().used == 2
    assert dataset[0]["pixel_values"].shape == (3, 32, 32) and dataset[1]["pixel_values"] is None
    (tmp_path / "object.json").write_text('{"id": 1}')
    with pytest.raises(ValueError, match="object.json must hold a JSON array"):
        SupervisedDataset.from_url(str(tmp_path / "object.json"), processor)


def test_from_url_reads_records_and_images_from_s3(processor: Any, s3_server: Any, s3_prefix: str) -> None:
    options = s3_server.storage_options
    storage.write_bytes_atomic(storage.join(s3_prefix, "images", "coco", "a.png"), png(20, 40, (0, 0, 255)), options)
    records = [record("s3-1", "<image>\nWhat colour?", "Blue.", image="coco/a.png"), record("s3-2", "Hi?", "Hello.")]
    storage.write_bytes_atomic(storage.join(s3_prefix, "mix.json"), json.dumps(records).encode(), options)
    dataset = SupervisedDataset.from_url(
        storage.join(s3_prefix, "mix.json"),
        processor,
        image_root=storage.join(s3_prefix, "images"),
        storage_options=options,
    )
    assert dataset.validate().used == 2
    item = dataset[0]
    assert item["id"] == "s3-1" and item["pixel_values"].shape == (3, 32, 32)
    blue = (1.0 - processor.image_processor.image_mean[2]) / processor.image_processor.image_std[2]
    assert item["pixel_values"][2, :, 16].mean().item() == pytest.approx(blue, abs=0.02)


# ----------------------------------------------------------------------------- batches


def test_collator_right_pads_with_the_ignore_index() -> None:
    batch = [
        {
            "id": "a",
            "input_ids": torch.tensor([5, 6, 7]),
            "labels": torch.tensor([-100, 6, 7]),
            "pixel_values": torch.ones(3, 4, 4),
        },
        {"id": "b", "input_ids": torch.tensor([8]), "labels": torch.tensor([8]), "pixel_values": None},
    ]
    out = SupervisedCollator(pad_token_id=0)(batch)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert out["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["pixel_values"].shape == (1, 3, 4, 4) and out["ids"] == ["a", "b"]
    text_only = SupervisedCollator(pad_token_id=3, ignore_index=-1)([batch[1], batch[1]])
    assert "pixel_values" not in text_only and text_only["labels"].tolist() == [[8], [8]]
    with pytest.raises(ValueError, match="pad token"):
        SupervisedCollator(pad_token_id=None)  # type: ignore[arg-type]


def test_loader_batches_train_the_tiny_llava_and_worker_errors_keep_their_kind(
    llava_folder: str, processor: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import LlavaForConditionalGeneration

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for k in range(3):
        (tmp_path / f"{k}.png").write_bytes(png(24 + 8 * k, 32, (40 * k, 90, 200)))
    records = [record(f"i{k}", "<image>\nWhat is the man doing?", "He is ironing.", image=f"{k}.png") for k in range(3)]
    records += [record(f"t{k}", "How many cars?", "There are two yellow cars." * (k + 1)) for k in range(3)]
    dataset = SupervisedDataset(records, processor, image_root=str(tmp_path))
    dataset.validate()
    sampler = ModalityLengthGroupedSampler(dataset.modality_lengths, batch_size=2)
    collator = SupervisedCollator(processor.tokenizer.pad_token_id)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collator)
    model = LlavaForConditionalGeneration.from_pretrained(llava_folder)
    seen = []
    for batch in loader:
        ids = batch.pop("ids")
        seen += ids
        assert ("pixel_values" in batch) == ids[0].startswith("i")
        loss = model(**batch).loss
        assert torch.isfinite(loss) and loss.item() > 0
    assert sorted(seen) == sorted(r["id"] for r in records)

    (tmp_path / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    worker_loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=1, collate_fn=collator)
    with pytest.raises(SampleError) as info:
        list(worker_loader)
    assert (info.value.kind, info.value.sample_id) == ("image", "i1")
