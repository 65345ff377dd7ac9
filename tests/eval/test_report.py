"""The evaluation table beside published numbers (som/eval/published.json)."""

from __future__ import annotations

from som.eval import report
from som.eval.registry import BENCHMARKS


def test_published_numbers_have_sources_and_known_benchmarks() -> None:
    paper = report.published()
    llava = next(m for m in paper["models"] if m["name"] == "LLaVA-1.5-13B")
    assert llava["scores"] == {"pope": 85.9, "mme": 1531.3, "seed": 68.2, "llava_bench": 70.7, "mmvet": 35.4,
                               "listing": None}
    for model in paper["models"]:
        assert model["source"] and set(model["scores"]) <= set(BENCHMARKS)
    assert set(paper["metrics"]) <= set(BENCHMARKS)


def test_rows_put_this_model_beside_the_papers() -> None:
    scores = {"pope": {"plain": {"headline": 86.123}, "tags": {"headline": 87.0}},
              "mme": {"plain": {"headline": 1500.0}}}
    rows = report.comparison_rows(scores, "my-model", ["plain", "tags"])
    pope, mme = rows
    assert pope["benchmark"] == "pope" and "F1" in pope["metric"]
    assert pope["my-model (plain)"] == "86.12" and pope["my-model (tags)"] == "87"
    assert pope["LLaVA-1.5-13B (paper)"] == "85.9"
    assert pope["SoM-LLaVA-1.5-13B (paper)"] == report.MISSING  # unchecked: never shown as 0
    assert mme["my-model (tags)"] == report.MISSING and mme["LLaVA-1.5-13B (paper)"] == "1531.3"
    assert "arXiv 2310.03744" in report.sources_markdown()
