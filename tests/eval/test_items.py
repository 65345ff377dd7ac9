"""Benchmark items from the real published files (../shared/reference), the registry, sources in
object storage and on the Hugging Face hub, and scores through the registry equal to the official
scorers' on LLaVA-1.5's answer files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from som import storage
from som.eval.benchmarks import FormatError
from som.eval.benchmarks.mme import LLAVA_SUFFIX, eval_tool_rows, score_results_dir, write_results_dir
from som.eval.benchmarks.pope import PROMPT_SUFFIX as POPE_SUFFIX
from som.eval.benchmarks.seed import PROMPT_SUFFIX as SEED_SUFFIX
from som.eval.items import EvalItem, Source, SourceError, load_answers
from som.eval.registry import BENCHMARKS, Benchmark, get_benchmark
from som.eval.tagging import read_image_bytes
from tests.eval.reference import reference
from tests.helpers.data import data_path
from tests.helpers.eval_sources import mme_full_source


def pope_folder(tmp_path: Path, labels: str = "AoiDragon_POPE_e3e3926_llava_pinned") -> Path:
    """LLaVA's layout (llava_pope_test.jsonl + coco/) assembled from the reference copies."""
    folder = tmp_path / "pope"
    (folder / "coco").mkdir(parents=True)
    (folder / "llava_pope_test.jsonl").symlink_to(reference("pope", "llava_eval", "llava_pope_test.jsonl"))
    for split in ("random", "popular", "adversarial"):
        (folder / "coco" / f"coco_pope_{split}.json").symlink_to(reference("pope", labels, f"coco_pope_{split}.json"))
    return folder


def llava_answers(path: Path) -> dict[str, str]:
    return {str(json.loads(line)["question_id"]): json.loads(line)["text"] for line in path.open()}


def test_registry_names_and_errors() -> None:
    assert list(BENCHMARKS) == [
        "pope",
        "mme",
        "seed",
        "mmvet",
        "llava_bench",
        "listing",
        "textvqa",
        "vqav2",
        "vizwiz",
        "gqa",
        "sqa",
        "mmbench",
        "mmbench_cn",
    ]
    for name, bench in BENCHMARKS.items():
        assert isinstance(bench, Benchmark) and bench.name == name
    assert [n for n, b in BENCHMARKS.items() if b.needs_judge] == ["mmvet", "llava_bench"]
    assert get_benchmark("LLaVA-Bench") is BENCHMARKS["llava_bench"]
    with pytest.raises(
        ValueError,
        match="unknown benchmark 'okvqa'; choose one of: pope, mme, seed, mmvet, llava_bench, listing, textvqa",
    ):
        get_benchmark("okvqa")
    assert get_benchmark("pope", images="s3://coco/val2014").images == "s3://coco/val2014"
    with pytest.raises(
        ValueError, match="pope: unknown option.*colour; known: allow_missing_splits, images, max_new_tokens"
    ):
        get_benchmark("pope", colour="red")


def test_pope_items_from_llavas_layout_score_like_the_official_script(tmp_path: Path) -> None:
    bench = get_benchmark("pope")
    items = bench.load_items(str(pope_folder(tmp_path)))
    assert len(items) == 8910
    assert {s: sum(i.meta["split"] == s for i in items) for s in ("random", "popular", "adversarial")} == {
        "random": 2910,
        "popular": 3000,
        "adversarial": 3000,
    }
    first = items[0]
    assert first.id == "1"
    assert first.prompt == "Is there a snowboard in the image?\n" + POPE_SUFFIX
    assert first.image == str(tmp_path / "pope" / "val2014" / "COCO_val2014_000000310196.jpg")
    assert first.meta["label"] == "yes"
    scores = bench.score(items, llava_answers(reference("pope", "llava_eval", "answers_llava-v1.5-13b.jsonl")))
    assert round(scores["headline"], 2) == 85.95  # test_pope.py: the published 85.9
    assert {s: round(v["f1"] * 100, 2) for s, v in scores["splits"].items()} == {
        "random": 87.14,
        "popular": 86.25,
        "adversarial": 84.46,
    }
    with pytest.raises(ValueError, match="8900 of 8910 items have no answer"):
        bench.score(items, {str(n): "yes" for n in range(1, 11)})
    assert len(bench.load_items(str(pope_folder(tmp_path / "again")), limit=3)) == 3


def test_pope_items_from_label_files_alone() -> None:
    items = get_benchmark("pope").load_items(str(reference("pope", "AoiDragon_POPE_HEAD")))
    assert len(items) == 9000
    assert items[0].id == "adversarial/1" and items[0].prompt.endswith("\n" + POPE_SUFFIX)
    assert len({i.id for i in items}) == 9000


def test_mme_items_from_llava_questions_and_the_template(tmp_path: Path) -> None:
    bench = get_benchmark("mme")
    source = mme_full_source(tmp_path / "mme", reference("mme", "eval_tool_official", "Your_Results"))
    items = bench.load_items(str(source))
    assert len(items) == 2374  # 2368 LLaVA questions + 6 of the template's that the file lacks
    first = items[0]
    assert first.id == "code_reasoning/0020.png#0" and items[1].id == "code_reasoning/0020.png#1"
    assert first.prompt == "Is a python code shown in the picture?\n" + LLAVA_SUFFIX
    assert first.meta == {
        "task": "code_reasoning",
        "image_name": "0020.png",
        "answer": "Yes",
        "question": "Is a python code shown in the picture? Please answer yes or no.",
    }
    assert first.image == str(source / "MME_Benchmark_release_version" / "code_reasoning" / "0020.png")
    prompts = {}
    for line in reference("mme", "answers_llava-v1.5-13b.jsonl").open():
        record = json.loads(line)
        prompts[(record["question_id"], record["prompt"])] = record["text"]
    answers = {i.id: prompts[(i.id.rsplit("#", 1)[0], i.prompt)] for i in items}
    scores = bench.score(items, answers)
    # LLaVA-1.5-13B's answers to all 2374: LLaVA's converter + calculation.py give 1531.32 / 295.36
    assert round(scores["headline"], 2) == 1531.32 and round(scores["cognition"], 2) == 295.36
    assert scores["missing_tasks"] == []
    # The same rows in the official eval_tool format, read back by calculation.py's rules.
    write_results_dir(eval_tool_rows(items, answers), tmp_path / "eval_tool")
    assert score_results_dir(tmp_path / "eval_tool").perception == pytest.approx(scores["perception"], abs=1e-9)


def test_mme_items_from_the_release_layout(tmp_path: Path) -> None:
    release = tmp_path / "MME" / "MME_Benchmark_release_version"
    (release / "count").mkdir(parents=True)
    (release / "count" / "0001.jpg").write_bytes(data_path("waterview.jpg").read_bytes())
    (release / "count" / "0001.txt").write_text(
        "Are there two boats? Please answer yes or no.\tYes\nAre there three boats?  Please answer yes or no.\tNo\n"
    )
    (release / "artwork" / "images").mkdir(parents=True)
    (release / "artwork" / "questions_answers_YN").mkdir()
    (release / "artwork" / "images" / "14777.jpg").write_bytes(b"\xff\xd8\xff")
    (release / "artwork" / "questions_answers_YN" / "14777.txt").write_text(
        "Is this artwork religious? Please answer yes or no.\tNo\nIs this artwork a portrait? Please answer yes or "
        "no.\tYes\n"
    )
    items = get_benchmark("mme").load_items(str(tmp_path / "MME"))
    assert [i.id for i in items] == [
        "count/0001.jpg#0",
        "count/0001.jpg#1",
        "artwork/images/14777.jpg#0",
        "artwork/images/14777.jpg#1",
    ]
    assert items[1].prompt == "Are there three boats?\n" + LLAVA_SUFFIX
    assert items[1].meta["question"] == "Are there three boats?  Please answer yes or no."
    assert read_image_bytes(items[0]) == data_path("waterview.jpg").read_bytes()
    scores = get_benchmark("mme").score(items, {i.id: a for i, a in zip(items, ["Yes", "No", "No", "No"], strict=True)})
    assert scores["tasks"]["count"]["score"] == 200.0 and scores["tasks"]["artwork"]["score"] == 50.0
    assert scores["headline"] == 250.0 and "OCR" in scores["missing_tasks"]


def write_seed(folder: Path) -> None:
    """A SEED-Bench.json in the official schema (three image questions, one video question)."""

    def question(qid: str, answer: str, type_id: int, data_type: str = "image") -> dict:
        return {
            "question_id": qid,
            "question": f"Question {qid}?",
            "answer": answer,
            "question_type_id": type_id,
            "data_type": data_type,
            "data_id": f"{qid}.jpg",
            "choice_a": "one",
            "choice_b": "two",
            "choice_c": "three",
            "choice_d": "four",
        }

    folder.mkdir(parents=True)
    data = {
        "question_type": {"Scene Understanding": 1, "Instances Counting": 5},
        "questions": [
            question("101", "A", 1),
            question("102", "B", 5),
            question("102", "B", 5),
            question("v9", "C", 10, "video"),
            question("103", "D", 5),
        ],
    }
    (folder / "SEED-Bench.json").write_text(json.dumps(data))


def test_seed_items_and_scores(tmp_path: Path) -> None:
    write_seed(tmp_path / "seed")
    bench = get_benchmark("seed")
    items = bench.load_items(str(tmp_path / "seed"))
    assert [i.id for i in items] == ["101", "102", "103"]  # video left out, repeated id kept once
    assert items[0].prompt == f"Question 101?\nA. one\nB. two\nC. three\nD. four\n{SEED_SUFFIX}"
    assert items[0].image == str(tmp_path / "seed" / "SEED-Bench-image" / "101.jpg")
    scores = bench.score(items, {"101": "A", "102": "B.", "103": "D"})
    assert (
        scores["headline"] == 50.0
    )  # "B." is wrong by the official rule; 102 is listed twice, as the converter counts
    assert scores["exact"]["overall"] == pytest.approx(200 / 3)  # each item once
    assert scores["exact"]["per_type"] == {"Scene Understanding": 100.0, "Instances Counting": 50.0}
    assert scores["lenient"]["overall"] == 100.0


def test_llava_bench_and_mmvet_items_load_from_reference() -> None:
    assert len(get_benchmark("llava_bench").load_items(str(reference("llava", "llava_bench_coco")))) == 90
    assert len(get_benchmark("mmvet").load_items(str(reference("mmvet")))) == 218


def test_items_from_object_storage(s3_server, s3_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same loader reads the published files from S3; images stay there, read by URL."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    storage.clear_filesystems()
    source = storage.join(s3_prefix, "mm-vet")
    storage.write_bytes_atomic(storage.join(source, "mm-vet.json"), reference("mmvet", "mm-vet.json").read_bytes())
    photo = data_path("waterview.jpg").read_bytes()
    storage.write_bytes_atomic(storage.join(source, "images", "v1_0.png"), photo)
    items = get_benchmark("mmvet").load_items(source, limit=2)
    assert [i.id for i in items] == ["v1_0", "v1_1"]
    assert items[0].image == storage.join(source, "images", "v1_0.png")
    assert read_image_bytes(items[0]) == photo
    answers = storage.join(s3_prefix, "answers.jsonl")
    storage.write_bytes_atomic(answers, b'{"question_id": "v1_0", "text": "x = 3"}\n{"id": "v1_1", "answer": "5"}\n')
    assert load_answers(answers) == {"v1_0": "x = 3", "v1_1": "5"}
    with pytest.raises(FormatError, match="seed.*SEED-Bench.json: not found"):
        get_benchmark("seed").load_items(storage.join(s3_prefix, "seed"))


def test_hugging_face_source_without_network_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(
        SourceError,
        match="cannot download Hugging Face dataset somflow-tests/no-such-benchmark.*"
        "copy the benchmark's published files",
    ):
        Source("hf://datasets/somflow-tests/no-such-benchmark")
    with pytest.raises(SourceError, match="expected hf://datasets/<owner>/<name>"):
        Source("hf://datasets/only-owner")


def test_items_round_trip_as_json() -> None:
    item = EvalItem("1", "Is there a dog?", "s3://b/x.jpg", {"label": "yes"})
    assert EvalItem.from_dict(json.loads(json.dumps(item.to_dict()))) == item


def test_benchmark_modules_stay_light_to_import() -> None:
    """The runner and `som eval --help` import these; heavy libraries load only when used."""
    import subprocess
    import sys

    code = (
        "import sys, som.eval.cli, som.eval.registry, som.eval.items, som.eval.tagging\n"
        "heavy = [m for m in ('torch', 'transformers', 'prefect', 'numpy', 'PIL', 'httpx', 'fsspec')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
