"""SoM-LLaVA end to end: images → SoM dataset → instruction data + mix → train → evaluate.

Each stage is one of the project's flows, run here as a subflow, and the pipeline passes each
stage's output to the next:

1. **dataset**: `som-dataset` marks what is new under `source` into `<root>/datasets/<name>`.
   It is incremental by itself: with nothing new it only reads the listing.
2. **instruction data**: `som-instruction-data` writes listing + QA conversations (and
   `mix.json` when `base_mix` is given) for the dataset's manifest version.
3. **mix**: the training file: the instruction build's `mix.json`, else its listing and QA
   records shuffled into `<root>/mixes/<name>-<version>.json`.
4. **train**: `som-train` on Slurm into `<run_root>/<name>-<version>`; returns the export.
   Run folders are on a file system every node sees (`run_root`; default `<root>/runs`):
   evaluation loads the exported model from there.
5. **evaluate**: `som-evaluate` of that export on `benchmarks` (skipped when none is given).
6. **summary**: a markdown artifact linking every output and subflow run, with the loss
   summary and the benchmark table.

Stages 2-5 are Prefect tasks cached on their inputs (results kept under
`<root>/pipelines/<name>/_prefect`): a rerun after a failure finds the stages that finished in
the cache and resumes at the one that failed, which itself resumes from what it saved
(finished shards, checkpoints, answered questions). New images give a new manifest version,
hence new instruction data, a new run folder and a new model.

    prefect deployment run 'som-pipeline/samples' --watch          # see prefect.yaml
    python -m flows.pipeline configs/pipeline/samples.yaml evaluate.suite=llava15   # this process
"""

from __future__ import annotations

import json
import sys
from typing import Literal

from prefect import flow, get_run_logger
from prefect.states import Completed, State

from flows.som_dataset import build_som_dataset
from som import storage
from som.pipeline_config import DatasetStage, EvalStage, InstructionStage, PipelineConfig, TrainStage
from som.settings import load_settings
from som.train.plan import absolute
from som.train.run_folder import loss_line
from tasks.pipeline import (
    StageFailed,
    StageLog,
    evaluate_stage,
    instruction_stage,
    mix_stage,
    run_id,
    train_stage,
)
from tasks.result_storage import result_storage_for


@flow(name="som-pipeline", flow_run_name="som-pipeline {name}: {source} -> {root}")
def som_pipeline(
    source: str,
    root: str,
    name: str = "samples",
    run_root: str | None = None,
    executor: Literal["auto", "slurm", "local"] = "auto",
    slurm: dict | None = None,
    dataset: DatasetStage = DatasetStage(),  # noqa: B008 - frozen models; Prefect shows defaults in the UI
    instructions: InstructionStage = InstructionStage(),  # noqa: B008
    train: TrainStage = TrainStage(),  # noqa: B008
    evaluate: EvalStage = EvalStage(),  # noqa: B008
) -> State:
    """Run every stage for the images under `source`, with all outputs under `root`.

    Arguments (the stage settings are som.pipeline_config's models; a deployment, a YAML file
    and `--set` fill them alike):
      source: folder or object-store prefix of images; root: where datasets/, mixes/ and
        pipelines/ go (object storage is fine); run_root: where training and evaluation run
        folders go, on a file system every Slurm node sees (default <root>/runs); name: this
        pipeline's dataset and run name.
      executor: auto | slurm | local; slurm: `som.jobs.JobSpec` fields for training and
        evaluation jobs.
      dataset: the SoM dataset build's settings (segmenter, coco, shards, Dask workers).
      instructions: the instruction data's (base mix, its image root, seed).
      train: som-train's config (YAML path or mapping), overrides and job layout.
      evaluate: som-evaluate's benchmarks and/or suite, their sources, variants, shards, judge
        (no benchmark and no suite: no evaluation stage).
    """
    log = get_run_logger()
    dest = storage.join(root, "datasets", name)
    pipeline_dir = storage.join(root, "pipelines", name)
    results = result_storage_for(pipeline_dir)
    stages = StageLog(f"{root}/{name}", total=5 if evaluate.enabled else 4)

    # 1. SoM dataset: new images marked, a new manifest version.
    build = build_som_dataset(source=source, dest=dest, **dataset.model_dump(), return_state=True)
    if not build.is_completed():
        return stages.failed("dataset", build.message)
    report = build.result()
    stages.add(
        "dataset",
        "nothing new" if not report.new else f"{report.new} new images",
        f"{dest} (manifest {report.version})",
        run_id(build),
    )

    try:
        # 2. Instruction data (listing + QA) for that manifest version.
        made = stages.run(
            "instruction data",
            instruction_stage.with_options(result_storage=results),
            dataset=dest,
            manifest_version=report.version,
            coco=dataset.coco,
            base_mix=instructions.base_mix,
            base_image_root=instructions.base_image_root,
            seed=instructions.seed,
        )
        version, records = made["version"], made["records"]
        stages.rows[-1]["output"] = (
            f"{made['folder']} ({records['som_listing']} listing, {records['som_qa']} QA records)"
        )

        # 3. The training file: the build's mix, else listing + QA shuffled together.
        data = stages.run(
            "mix",
            mix_stage.with_options(result_storage=results),
            instructions=made,
            dataset=dest,
            output=storage.join(root, "mixes", f"{name}-{version}.json"),
            seed=instructions.seed,
        )
        stages.rows[-1]["output"] = data

        # 4. Train; Slurm jobs may start elsewhere: a local run folder travels as an absolute path.
        run_dir = absolute(storage.join(run_root or storage.join(root, "runs"), f"{name}-{version}"))
        trained = stages.run(
            "train",
            train_stage.with_options(result_storage=results),
            data=data,
            run_dir=run_dir,
            image_root=dest,
            config=train.config,
            overrides=train.overrides,
            nodes=train.nodes,
            tasks_per_node=train.tasks_per_node,
            gpus_per_node=train.gpus_per_node,
            slurm=slurm,
            executor=executor,
        )
        stages.rows[-1].update(output=trained["model"], loss=loss_line(run_dir))

        # 5. Evaluate the export.
        evaluation = None
        if evaluate.enabled:
            evaluation = stages.run(
                "evaluate",
                evaluate_stage.with_options(result_storage=results),
                model=trained["model"],
                run_dir=run_dir,
                settings=evaluate,
                executor=executor,
                slurm=slurm,
            )
            stages.rows[-1]["output"] = evaluation["scores_dir"]
    except StageFailed as exc:
        stage, _, message = str(exc).partition(": ")
        return stages.failed(stage, message)

    stages.publish(evaluation["table"] if evaluation else None, f"som-pipeline {name}: every stage and output")
    outputs = {
        "dataset": dest,
        "manifest_version": report.version,
        "instructions": made["folder"],
        "mix": data,
        "run_dir": run_dir,
        "model": trained["model"],
        "scores": evaluation["scores_dir"] if evaluation else None,
    }
    storage.write_bytes_atomic(storage.join(pipeline_dir, "outputs.json"), json.dumps(outputs, indent=2).encode())
    log.info("pipeline %s done: %s", name, outputs)
    done = "; ".join(f"{row['stage']}: {row['how']}" for row in stages.rows)
    return Completed(message=f"model {trained['model']}; {done}", data=outputs)


if __name__ == "__main__":
    # python -m flows.pipeline configs/pipeline/samples.yaml [evaluate.suite=llava15 ...]
    settings = load_settings(PipelineConfig, sys.argv[1], sys.argv[2:])
    som_pipeline(**dict(settings))
