"""Named suites: LLaVA-1.5's 12 benchmarks + the listing probe, read from LLaVA's layout."""

from __future__ import annotations

import pytest

from som.eval.registry import get_benchmark
from som.eval.suites import get_suite

LLAVA15_TABLE = [
    "vqav2",
    "gqa",
    "vizwiz",
    "sqa",
    "textvqa",
    "pope",
    "mme",
    "mmbench",
    "mmbench_cn",
    "seed",
    "llava_bench",
    "mmvet",
]  # LLaVA-1.5's model-zoo columns, in order


def test_llava15_is_the_model_zoo_table_plus_listing_each_a_registered_benchmark() -> None:
    suite = get_suite("LLaVA-1.5")
    assert suite.names == [*LLAVA15_TABLE, "listing"]
    assert [get_benchmark(name).name for name in suite.names] == suite.names
    assert suite.variants == ("plain",)


def test_sources_come_from_the_playground_layout_unless_given() -> None:
    sources = get_suite("llava15").sources("/data/eval", {"pope": "s3://b/pope"})
    assert sources["pope"] == "s3://b/pope"
    assert sources["sqa"] == "/data/eval/scienceqa" and sources["mme"] == "/data/eval/MME"
    assert sources["mmbench"] == sources["mmbench_cn"] == "/data/eval/mmbench"
    assert sources["seed"] == "/data/eval/seed_bench" and sources["mmvet"] == "/data/eval/mm-vet"
    with pytest.raises(ValueError, match=r"no source for vqav2 \(<data-root>/vqav2\), gqa"):
        get_suite("llava15").sources(None, {"pope": "x"})
    with pytest.raises(ValueError, match="unknown suite 'llava16'; choose one of: llava15"):
        get_suite("llava16")


def test_flow_inputs_add_the_suite_to_named_benchmarks() -> None:
    from som.eval.plan import suite_inputs

    names, sources, variants = suite_inputs(
        "llava15", ["listing", "llava-bench"], {"mm-vet": "/mine"}, "s3://root", None
    )
    assert names == get_suite("llava15").names  # named ones already in the suite are not repeated
    assert sources["mmvet"] == "/mine" and sources["gqa"] == "s3://root/gqa" and variants == ["plain"]
    assert suite_inputs(None, ["pope"], {"pope": "p"}, None, None) == (["pope"], {"pope": "p"}, ["plain", "tags"])
    assert suite_inputs("llava15", [], {}, "r", ["tags"])[2] == ["tags"]
    with pytest.raises(ValueError, match="data_root is only used with a suite"):
        suite_inputs(None, ["pope"], {}, "r", None)
