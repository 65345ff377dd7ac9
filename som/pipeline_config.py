"""Typed settings of the end-to-end pipeline, one model per stage, in the order data moves.

Why typed stage configs instead of 27 flat parameters: a deployment's parameters, a YAML
file and `--set` overrides fill the same models, an unknown or mistyped key fails before any
stage runs with an error naming it (`evaluate.shards: Input should be greater than or equal
to 1`), and the Prefect UI shows one form section per stage. Pydantic (already installed with
Prefect) validates; nothing here imports Prefect.

    som_pipeline(source="s3://raw/samples", root="s3://somflow",
                 train=TrainStage(config="configs/train/som-llava15-13b-continue.yaml"),
                 evaluate=EvalStage(suite="llava15", data_root="s3://somflow/benchmarks/llava-eval"))
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from som.settings import Settings, validate

Variant = Literal["plain", "tags"]


class DatasetStage(Settings):
    """The SoM dataset build (flows/som_dataset.py): segmenter, COCO masks, shards, Dask."""

    segmenter: str | None = Field(default=None, description="sam | slic | felzenszwalb | coco | auto (default)")
    segmenter_params: dict[str, Any] | None = None
    coco: str | None = Field(default=None, description="COCO instances JSON: its images, masks and names")
    short_side: int | None = Field(default=None, ge=0)
    shard_size: int = Field(default=200, ge=1)
    workers: int | None = Field(default=None, ge=1)
    scheduler: str | None = Field(default=None, description="address of a running Dask scheduler")


class InstructionStage(Settings):
    """Listing + QA instruction data and the mix into a base LLaVA instruction set."""

    base_mix: str | None = Field(default=None, description="base LLaVA instruction JSON, e.g. llava_v1_5_mix665k.json")
    base_image_root: str | None = None
    seed: int = 0


class TrainStage(Settings):
    """som-train: a config (YAML path or mapping), overrides and the job layout."""

    config: str | dict[str, Any] | None = None
    overrides: dict[str, Any] | None = None
    nodes: int = Field(default=1, ge=1)
    tasks_per_node: int = Field(default=1, ge=1)
    gpus_per_node: int = Field(default=0, ge=0)


class EvalStage(Settings):
    """som-evaluate of the trained model; skipped when no benchmark and no suite is named."""

    benchmarks: list[str] = Field(default_factory=list)
    suite: str | None = Field(default=None, description="a named suite, e.g. llava15")
    data: dict[str, str] = Field(default_factory=dict, description="benchmark -> folder or URL of its files")
    data_root: str | None = Field(default=None, description="with a suite: LLaVA's playground/data/eval layout")
    variants: list[Variant] | None = None
    shards: int = Field(default=2, ge=1)
    limit: int | None = Field(default=None, ge=1)
    judge: str | None = Field(default=None, description="<model>[@<base_url>] for MM-Vet / LLaVA-Bench")
    batch_size: int = Field(default=8, ge=1)
    model_kwargs: dict[str, Any] | None = Field(default=None, description="som.eval.options.ModelOptions fields")
    tag_options: dict[str, Any] | None = Field(default=None, description="som.eval.tagging.TagConfig fields")

    @field_validator("model_kwargs")
    @classmethod
    def _model_options(cls, values: dict[str, Any] | None) -> dict[str, Any] | None:
        from som.eval.options import ModelOptions

        if values is not None:
            validate(ModelOptions, values)
        return values

    @field_validator("tag_options")
    @classmethod
    def _tag_options(cls, values: dict[str, Any] | None) -> dict[str, Any] | None:
        from som.eval.tagging import TagConfig

        if values is not None:
            TagConfig.from_dict(values)
        return values

    @property
    def enabled(self) -> bool:
        return bool(self.benchmarks or self.suite)


class PipelineConfig(Settings):
    """Everything `som_pipeline` takes, as one document (YAML) with a section per stage."""

    source: str
    root: str
    name: str = "samples"
    run_root: str | None = None
    executor: Literal["auto", "slurm", "local"] = "auto"
    slurm: dict[str, Any] | None = None
    dataset: DatasetStage = Field(default_factory=DatasetStage)
    instructions: InstructionStage = Field(default_factory=InstructionStage)
    train: TrainStage = Field(default_factory=TrainStage)
    evaluate: EvalStage = Field(default_factory=EvalStage)
