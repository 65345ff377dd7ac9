"""`check_file`: every planted problem reported with its ids, clean files ok, token statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from som.data.check import CheckReport, check_file, load_tokenizer, record_text


def rec(rid, image=None, *, answers=("a reply",), questions=None, first_prefix=None):
    """A LLaVA record; `first_prefix` overrides the `<image>\\n` opening the first question."""
    questions = questions or [f"question {n}?" for n in range(len(answers))]
    prefix = first_prefix if first_prefix is not None else ("<image>\n" if image else "")
    conversations = []
    for number, (question, answer) in enumerate(zip(questions, answers, strict=False)):
        value = (prefix if number == 0 else "") + question
        conversations += [{"from": "human", "value": value}, {"from": "gpt", "value": answer}]
    out = {"id": rid, "conversations": conversations}
    if image is not None:
        out["image"] = image
    return out


def write(path: Path, records) -> str:
    path.write_text(json.dumps(list(records), indent=1), encoding="utf-8")
    return str(path)


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "coco").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        (root / "coco" / name).write_bytes(b"\xff\xd8 not really a jpeg")
    return root


CLEAN = [
    rec("clean-1", "coco/a.jpg"),
    rec("clean-2", "coco/b.jpg", answers=("first", "second")),
    rec("clean-3"),  # text-only
    rec(7, "coco/a.jpg"),  # integer id, image shared with clean-1
]


def test_clean_file_is_ok(tmp_path, images):
    report = check_file(write(tmp_path / "clean.json", CLEAN), image_root=str(images))
    assert report.ok, report.lines()
    assert report.records == 4
    assert report.images_checked == 2  # coco/a.jpg looked up once
    assert report.tokens is None
    assert all(report.count(kind) == 0 for kind in report.problems)
    assert report.lines()[-1] == "OK"
    json.dumps(report.as_dict())


def test_every_planted_problem_is_reported(tmp_path, images):
    planted = [
        *CLEAN,
        rec("clean-1", "coco/b.jpg"),  # duplicate id (first occurrence is fine)
        rec("7"),  # "7" duplicates the integer id 7
        rec("empty-answer", "coco/a.jpg", answers=("fine", "  ")),
        rec("no-token", "coco/a.jpg", first_prefix=""),
        rec("token-in-text", first_prefix="<image>\n"),
        rec("token-twice", "coco/a.jpg", questions=["what <image> is this?"]),
        rec("token-late", "coco/a.jpg", first_prefix="", questions=["hi", "<image>\nand this?"], answers=("x", "y")),
        {"id": "bad-shape", "conversations": [{"from": "gpt", "value": "hello"}]},
        {"id": "no-conversations", "image": "coco/a.jpg"},
        "not an object",
        {**rec("bad-image"), "image": 5},
        rec("missing-image", "coco/nowhere.jpg"),
        rec("missing-absolute", str(images / "gone.jpg")),
    ]
    report = check_file(write(tmp_path / "planted.json", planted), image_root=str(images))
    assert not report.ok
    assert report.records == len(planted)
    assert report.ids("duplicate_id") == ["clean-1", "7"]
    assert report.ids("empty_answer") == ["empty-answer"]
    assert report.problems["empty_answer"].examples[0].reason == "turn 3 is empty"
    assert report.ids("image_token") == ["no-token", "token-in-text", "token-twice", "token-late"]
    reasons = [e.reason for e in report.problems["image_token"].examples]
    assert reasons == [
        "no <image> in an image record",
        "<image> appears 1x in a record without an image",
        "<image> appears 2x for 1 image(s)",
        "<image> does not open the first human turn",
    ]
    assert report.ids("malformed") == ["bad-shape", "no-conversations", None, "bad-image"]
    malformed = report.problems["malformed"].examples
    assert malformed[2].index == planted.index("not an object")
    assert "image is not a path" in malformed[3].reason
    assert report.ids("missing_image") == ["missing-image", "missing-absolute"]
    assert report.problems["missing_image"].examples[0].reason == f"no image at {images}/coco/nowhere.jpg"
    assert report.problems["missing_image"].examples[1].reason == f"no image at {images}/gone.jpg"
    counts = {kind: report.count(kind) for kind in report.problems}
    assert counts == {"malformed": 4, "duplicate_id": 2, "empty_answer": 1, "image_token": 4, "missing_image": 2}
    text = "\n".join(report.lines())
    assert "duplicate_id: 2" in text and f"- element {planted.index('not an object')}: not an object" in text
    assert report.lines()[-1] == "PROBLEMS FOUND"
    assert json.loads(json.dumps(report.as_dict()))["problems"]["missing_image"]["count"] == 2


def test_exists_is_injected_and_locations_follow_the_root(tmp_path):
    asked: list[str] = []

    def exists(location: str) -> bool:
        asked.append(location)
        return "present" in location

    records = [
        rec("r", "present.jpg"),
        rec("u", "s3://bucket/gone.jpg"),
        rec("m", ["present.jpg", "gone.jpg"], first_prefix="<image>\n<image>\n"),
    ]
    report = check_file(write(tmp_path / "f.json", records), image_root="s3://bucket/root", exists=exists)
    assert asked == ["s3://bucket/root/present.jpg", "s3://bucket/gone.jpg", "s3://bucket/root/gone.jpg"]
    assert report.ids("missing_image") == ["u", "m"]
    assert report.count("image_token") == 0 and report.count("malformed") == 0
    # without a root the path itself is the location
    asked.clear()
    check_file(write(tmp_path / "g.json", records[:1]), exists=exists)
    assert asked == ["present.jpg"]


def test_examples_are_capped_but_counts_are_not(tmp_path):
    records = [rec("dup", None) for _ in range(30)]
    report = check_file(write(tmp_path / "dups.json", records), max_examples=5)
    assert report.count("duplicate_id") == 29
    assert len(report.problems["duplicate_id"].examples) == 5
    assert any("... and 24 more" in line for line in report.lines())


def test_truncated_file_is_fatal_with_counts_so_far(tmp_path):
    path = tmp_path / "cut.json"
    text = json.dumps([rec("a"), rec("b")])
    path.write_text(text[: text.index('"b"') + 5], encoding="utf-8")
    report = check_file(str(path))
    assert report.records == 1
    assert report.fatal and not report.ok
    assert any("UNREADABLE" in line for line in report.lines())


# ----------------------------------------------------------------------------- tokens


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory) -> Path:
    """A tiny word-level tokenizer trained offline and saved as a Hugging Face folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]"])
    raw.train_from_iterator(["what is in the picture", "a dog and a cat", "question answer reply"], trainer)
    folder = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]").save_pretrained(folder)
    return folder


def test_token_statistics_match_independent_lengths(tmp_path, tokenizer_folder):
    from tokenizers import Tokenizer

    records = [
        rec(f"r{n}", answers=tuple("a dog and a cat " * n or "x" for _ in range(1 + n % 2))) for n in range(1, 12)
    ]
    records.append({"id": "broken", "conversations": "not a list"})  # tokenized as empty text
    url = write(tmp_path / "tok.json", records)
    raw = Tokenizer.from_file(str(tokenizer_folder / "tokenizer.json"))
    lengths = sorted(len(raw.encode(record_text(r)).ids) for r in records)
    assert lengths[0] == 0 and len(set(lengths)) > 5
    max_length = lengths[-3]

    report = check_file(url, tokenizer=load_tokenizer(str(tokenizer_folder)), max_length=max_length)
    stats = report.tokens
    assert stats is not None and stats.records == len(records)
    assert (stats.min, stats.max) == (lengths[0], lengths[-1])
    assert math.isclose(stats.mean, sum(lengths) / len(lengths))
    assert stats.p50 == int(np.percentile(lengths, 50, method="inverted_cdf"))
    assert stats.p95 == int(np.percentile(lengths, 95, method="inverted_cdf"))
    assert stats.over_max_length == sum(length > max_length for length in lengths) == 2
    assert len(stats.longest) == 2
    assert report.as_dict()["tokens"]["p95"] == stats.p95
    assert any(line.strip().startswith("tokens over 12 records") for line in report.lines())


def test_tokenizer_call_only_objects_work(tmp_path):
    class Splitter:
        def __call__(self, text: str) -> dict[str, list[int]]:
            return {"input_ids": list(range(len(text.split())))}

    url = write(tmp_path / "t.json", [rec("a", answers=("one two three",))])
    report: CheckReport = check_file(url, tokenizer=Splitter())
    # "question 0?" + "one two three" -> 5 words
    assert report.tokens is not None and report.tokens.max == 5 and report.tokens.over_max_length == 0


def test_check_command_exit_codes(tmp_path):
    import json

    from click.testing import CliRunner

    from som.cli import cli

    good = [{"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}]
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "bad.json").write_text(json.dumps(good + good))
    assert CliRunner().invoke(cli, ["data", "check", str(tmp_path / "good.json")]).exit_code == 0
    bad = CliRunner().invoke(cli, ["data", "check", str(tmp_path / "bad.json"), "--json"])
    assert bad.exit_code == 1 and json.loads(bad.output)["problems"]["duplicate_id"]["count"] == 1
    missing = CliRunner().invoke(cli, ["data", "check", str(tmp_path / "nope.json")])
    assert missing.exit_code == 1 and "cannot read" in missing.output


# ----------------------------------------------------------------------------- issue 11 item 8


def test_image_path_leaving_the_root_is_a_problem_not_a_traceback(tmp_path, images):
    """Today storage.join raises ValueError("refusing '..'") out of check_file."""
    records = [rec("up", "../../etc/passwd"), rec("ok", "coco/../coco/a.jpg")]
    report = check_file(write(tmp_path / "up.json", records), image_root=str(images))
    assert not report.ok
    assert report.ids("malformed") == ["up"]
    assert "leaves the image root" in report.problems["malformed"].examples[0].reason
    assert report.count("missing_image") == 0


def test_latin1_file_is_a_fatal_problem_with_its_position(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps([rec("1"), rec("café")], ensure_ascii=False).encode("latin-1"))
    report = check_file(str(path))
    assert not report.ok
    assert report.records == 1
    assert "not UTF-8 text: byte 0xe9" in report.fatal and "element 1" in report.fatal


def test_malformed_record_in_the_middle_reports_index_and_offset(tmp_path):
    n, bad = 20_000, 10_000
    path = tmp_path / "big.json"
    with open(path, "wb") as f:
        f.write(b"[")
        for i in range(n):
            text = json.dumps(rec(f"r{i}")).encode()
            if i == bad:
                text = text.replace(b'"from": "gpt"', b'"from": gpt', 1)
                offset = f.tell() + 1 + text.index(b"gpt")
            f.write((b"," if i else b"") + text)
        f.write(b"]")
    assert path.stat().st_size > 2 * 2**20
    report = check_file(str(path))
    assert report.records == bad
    assert f"element {bad} (byte offset {offset}, line 1," in report.fatal, report.fatal


def test_check_and_mix_commands_report_latin1_and_dotdot_without_tracebacks(tmp_path, images):
    from click.testing import CliRunner

    from som.cli import cli

    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(json.dumps([rec("café")], ensure_ascii=False).encode("latin-1"))
    dotdot = write(tmp_path / "dotdot.json", [rec("up", "../x.jpg")])
    runner = CliRunner()
    for args in (
        ["data", "check", str(latin1)],
        ["data", "check", dotdot, "--image-root", str(images)],
        ["data", "mix", "--base", str(latin1), "--add", dotdot, "--out", str(tmp_path / "o.json")],
        [
            "data",
            "mix",
            "--base",
            dotdot,
            "--add",
            dotdot,
            "--out",
            str(tmp_path / "o.json"),
            "--image-root",
            str(images),
        ],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "not UTF-8" in result.output or "leaves the image root" in result.output, result.output
