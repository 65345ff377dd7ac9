"""Named benchmark suites: one flag for "every benchmark a paper reports, with its settings".

Why a suite is data and not a loop in a script: a user comparing a SoM-tuned model with
LLaVA-1.5 needs the same 12 benchmarks (+ the SoM listing probe), each read from the folder
LLaVA's `docs/Evaluation.md` tells people to fill (`playground/data/eval/<folder>`), prompted
and generated as LLaVA-1.5's `scripts/v1_5/eval/*.sh` do (greedy; the prompt profile "auto"
picks LLaVA-1.5's own format for LLaVA-1.5 models; each benchmark declares its token limit).
`som eval run --suite llava15 --data-root playground/data/eval` then needs nothing else, and a
source given with `--data NAME=SOURCE` replaces the folder under the root for that benchmark.

Standard library only (imported by `som eval --help`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Suite:
    """A list of benchmarks with the folder each one's files sit in under a data root.

    Arguments:
    benchmarks: (registry name, folder under the data root) in the order the paper's table has them.
    variants: the variants run when the user names none (LLaVA-1.5 evaluates plain images).
    """

    name: str
    description: str
    benchmarks: tuple[tuple[str, str], ...]
    variants: tuple[str, ...] = ("plain",)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.benchmarks]

    def sources(self, data_root: str | None, data: Mapping[str, str]) -> dict[str, str]:
        """Every benchmark's source: `data[name]` where given, else `<data_root>/<folder>`.
        A benchmark with neither is an error naming it and the folder it would be read from."""
        from som import storage

        sources: dict[str, str] = {}
        missing = []
        for name, folder in self.benchmarks:
            if name in data:
                sources[name] = data[name]
            elif data_root:
                sources[name] = storage.join(data_root, folder)
            else:
                missing.append(f"{name} (<data-root>/{folder})")
        if missing:
            raise ValueError(
                f"suite {self.name}: no source for {', '.join(missing)}: pass --data-root "
                "(LLaVA's playground/data/eval layout) or --data NAME=SOURCE"
            )
        return sources


LLAVA15 = Suite(
    name="llava15",
    description="LLaVA-1.5's 12 benchmarks (docs/Evaluation.md) plus the SoM listing probe",
    benchmarks=(
        ("vqav2", "vqav2"),
        ("gqa", "gqa"),
        ("vizwiz", "vizwiz"),
        ("sqa", "scienceqa"),
        ("textvqa", "textvqa"),
        ("pope", "pope"),
        ("mme", "MME"),
        ("mmbench", "mmbench"),
        ("mmbench_cn", "mmbench"),
        ("seed", "seed_bench"),
        ("llava_bench", "llava-bench-in-the-wild"),
        ("mmvet", "mm-vet"),
        ("listing", "som-listing"),
    ),
)

SUITES: dict[str, Suite] = {suite.name: suite for suite in (LLAVA15,)}
_ALIASES = {"llava-1.5": "llava15", "llava1.5": "llava15", "llava_15": "llava15"}


def get_suite(name: str) -> Suite:
    """The suite called `name` (case-insensitive, with a few spellings of "llava15")."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose one of: {', '.join(SUITES)}")
    return SUITES[key]
