"""The evaluation table beside published numbers (som/eval/published.json)."""

from __future__ import annotations

from som.eval import report
from som.eval.registry import BENCHMARKS

ISSUE_TABLE = {  # LLaVA's model zoo, LLaVA-1.5 7B / 13B (full fine-tune), in its column order
    "vqav2": (78.5, 80.0),
    "gqa": (62.0, 63.3),
    "vizwiz": (50.0, 53.6),
    "sqa": (66.8, 71.6),
    "textvqa": (58.2, 61.3),
    "pope": (85.9, 85.9),
    "mme": (1510.7, 1531.3),
    "mmbench": (64.3, 67.7),
    "mmbench_cn": (58.3, 63.6),
    "seed_all": (58.6, 61.6),
    "llava_bench": (65.4, 72.5),
    "mmvet": (31.1, 36.1),
}
SOM_TABLE = {  # SoM-LLaVA's README (13B): POPE, MME, SEED-I, LLaVA-Wild, MM-Vet
    "LLaVA-1.5-13B (SoM-LLaVA's table)": (85.9, 1531.3, 68.2, 70.7, 35.4),
    "SoM-LLaVA-1.5-13B": (86.6, 1563.1, 69.6, 75.3, 35.9),
    "SoM-LLaVA-1.5-13B w/ tags": (87.0, 1572.8, 69.5, 73.3, 37.2),
    "BLIP-2 (Vicuna-13B)": (85.3, 1293.8, 49.7, 38.1, 22.4),
}


def test_published_numbers_have_sources_and_known_benchmarks() -> None:
    paper = report.published()
    models = {m["name"]: m for m in paper["models"]}
    for key, (seven, thirteen) in ISSUE_TABLE.items():
        assert models["LLaVA-1.5-7B"]["scores"][key] == seven, key
        assert models["LLaVA-1.5-13B"]["scores"][key] == thirteen, key
    for name, numbers in SOM_TABLE.items():
        scores = models[name]["scores"]
        assert tuple(scores[k] for k in ("pope", "mme", "seed", "llava_bench", "mmvet")) == numbers, name
    known = set(BENCHMARKS) | set(paper["rows"])
    for model in paper["models"]:
        assert model["source"] and set(model["scores"]) <= known
    assert set(paper["metrics"]) <= known
    assert {spec["benchmark"] for spec in paper["rows"].values()} <= set(BENCHMARKS)


def test_rows_put_this_model_beside_the_papers() -> None:
    scores = {
        "pope": {"plain": {"headline": 86.123}, "tags": {"headline": 87.0}},
        "mme": {"plain": {"headline": 1500.0}},
    }
    rows = report.comparison_rows(scores, "my-model", ["plain", "tags"])
    pope, mme = rows
    assert pope["benchmark"] == "pope" and "F1" in pope["metric"]
    assert pope["my-model (plain)"] == "86.12" and pope["my-model (tags)"] == "87"
    assert pope["LLaVA-1.5-13B (paper)"] == "85.9" and pope["SoM-LLaVA-1.5-13B w/ tags (paper)"] == "87"
    assert mme["my-model (tags)"] == report.MISSING and mme["LLaVA-1.5-13B (paper)"] == "1531.3"
    assert pope["BLIP-2 (Vicuna-13B) (paper)"] == "85.3"
    assert "arXiv 2310.03744" in report.sources_markdown()


def test_seed_gets_an_image_row_and_an_all_row() -> None:
    scores = {"seed": {"plain": {"headline": 66.0, "all_accuracy": 59.25}}}
    image, both = report.comparison_rows(scores, "m", ["plain", "tags"])
    assert (image["benchmark"], image["m (plain)"], image["LLaVA-1.5-13B (paper)"]) == ("seed", "66", report.MISSING)
    assert image["SoM-LLaVA-1.5-13B (paper)"] == "69.6"
    assert (both["benchmark"], both["m (plain)"], both["LLaVA-1.5-13B (paper)"]) == ("seed_all", "59.25", "61.6")
    assert both["m (tags)"] == report.MISSING  # no tags run: never shown as 0
