"""Every benchmark by name, behind one protocol the evaluation runner drives.

The runner needs four things from a benchmark: its items (`load_items` from the published
files), whether scoring needs a GPT judge (`needs_judge`), and JSON-able scores with one
`headline` number for tables (`score`). Headlines, each on the scale its paper reports:

| name          | headline                                         |
|---------------|--------------------------------------------------|
| `pope`        | mean F1 over the COCO splits, in percent         |
| `mme`         | Perception score (sum of 10 tasks, max 2000)     |
| `seed`        | exact-letter accuracy on image questions, % (all/video beside it) |
| `mmvet`       | GPT-graded total, 0-100                          |
| `llava_bench` | GPT-judged score relative to the reference, %    |
| `listing`     | tag-level F1 of the SoM listing probe, in percent |
| `textvqa`     | accuracy (m4c soft score, eval_textvqa.py), %     |
| `vqav2`       | val: VQA accuracy, %; test-dev: None (upload file) |
| `vizwiz`      | val: VQA accuracy, %; test: None (upload file)    |
| `gqa`         | testdev-balanced accuracy (GQA eval.py), %; None without the answer key |
| `sqa`         | ScienceQA-IMG: accuracy on image questions (eval_science_qa.py), % |
| `mmbench`     | CircularEval accuracy, rule-based letters (undecided count as wrong), % |
| `mmbench_cn`  | the same on MMBench-CN, %                        |

Each benchmark's module docstring lists the source layouts `load_items` accepts. The "w/ tags"
variant of any benchmark is `som.eval.tagging.with_tags(items, TagConfig(...))`.
Importing this module stays light (standard library only).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from som.eval.benchmarks.gqa import GqaBenchmark
from som.eval.benchmarks.listing import ListingBenchmark
from som.eval.benchmarks.llava_bench import LlavaBenchBenchmark
from som.eval.benchmarks.mmbench import MMBenchBenchmark
from som.eval.benchmarks.mme import MMEBenchmark
from som.eval.benchmarks.mmvet import MMVetBenchmark
from som.eval.benchmarks.pope import PopeBenchmark
from som.eval.benchmarks.seed import SeedBenchmark
from som.eval.benchmarks.sqa import SqaBenchmark
from som.eval.benchmarks.textvqa import TextVQABenchmark
from som.eval.benchmarks.vizwiz import VizWizBenchmark
from som.eval.benchmarks.vqav2 import VQAv2Benchmark

if TYPE_CHECKING:
    from som.eval.items import EvalItem
    from som.eval.judge import Judge


@runtime_checkable
class Benchmark(Protocol):
    """What the runner drives; see each benchmark's module for its source layouts."""

    # Read-only properties: the benchmarks are frozen dataclasses.
    @property
    def name(self) -> str: ...

    @property
    def needs_judge(self) -> bool: ...

    @property
    def max_new_tokens(self) -> int:
        """Default generation length, as LLaVA's scripts: 128 for short answers (model_vqa_loader.py),
        1024 for open-ended ones (model_vqa.py); `som eval run --max-new-tokens` overrides it."""
        ...

    def load_items(self, source: str, *, limit: int | None = None) -> list[EvalItem]:
        """Items from the published files at `source` (folder, storage URL or hf://datasets/...)."""
        ...

    def score(
        self,
        items: list[EvalItem],
        answers: dict[str, str],
        *,
        judge: Judge | None = None,
        cache_url: str | None = None,
    ) -> dict[str, Any]:
        """JSON-able scores with a "headline" float; `answers` maps item id -> model answer.

        A benchmark whose split is scored by a server (VQAv2 test-dev, VizWiz test, MMBench
        test, ...) also takes ``output_url``: the run's variant folder, where it writes the
        upload file; it then returns ``submission_only: True``, ``headline: None`` and where
        the file went and where to upload it. The runner passes ``output_url`` only to a
        `score` that declares it."""
        ...


BENCHMARKS: dict[str, Benchmark] = {
    bench.name: bench
    for bench in (
        PopeBenchmark(),
        MMEBenchmark(),
        SeedBenchmark(),
        MMVetBenchmark(),
        LlavaBenchBenchmark(),
        ListingBenchmark(),
        TextVQABenchmark(),
        VQAv2Benchmark(),
        VizWizBenchmark(),
        GqaBenchmark(),
        SqaBenchmark(),
        MMBenchBenchmark(),
        MMBenchBenchmark(name="mmbench_cn", lang="cn"),
    )
}

_ALIASES = {
    "llava-bench": "llava_bench",
    "llava_wild": "llava_bench",
    "mm-vet": "mmvet",
    "seed_bench": "seed",
    "seed-bench": "seed",
    "som_listing": "listing",
    "text-vqa": "textvqa",
    "text_vqa": "textvqa",
    "vqa-v2": "vqav2",
    "vqa_v2": "vqav2",
    "viz-wiz": "vizwiz",
    "viz_wiz": "vizwiz",
    "gqa_testdev": "gqa",
    "gqa-testdev": "gqa",
    "gqa_testdev_balanced": "gqa",
    "scienceqa": "sqa",
    "science_qa": "sqa",
    "scienceqa-img": "sqa",
    "sqa-img": "sqa",
    "sqa_img": "sqa",
    "mmbench-en": "mmbench",
    "mmbench_en": "mmbench",
    "mmbench-cn": "mmbench_cn",
    "mmbenchcn": "mmbench_cn",
}


def get_benchmark(name: str, **options: Any) -> Benchmark:
    """The benchmark called `name`; `options` set its fields (e.g. images="s3://coco/val2014")."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    bench = BENCHMARKS[key]
    if not options:
        return bench
    fields = {f.name for f in dataclasses.fields(bench)} - {"name", "needs_judge"}  # type: ignore[arg-type]
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"{key}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(fields)) or 'none'}")
    return dataclasses.replace(bench, **options)  # type: ignore[type-var]
