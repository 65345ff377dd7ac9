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
    python -m flows.pipeline SOURCE ROOT                            # defaults, this process
"""

from __future__ import annotations

import json
import sys
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.settings import PREFECT_UI_URL
from prefect.states import Completed, Failed, State

from flows.instruction_data import build_instruction_dataset
from flows.som_dataset import build_som_dataset
from flows.evaluate import evaluate
from flows.train import absolute, train_llava
from som import storage
from tasks.reports import PRESIGNED_SECONDS, artifact_key
from tasks.result_storage import result_storage_for

STAGE = {"cache_policy": INPUTS + TASK_SOURCE, "persist_result": True}


class StageFailed(RuntimeError):
    """A stage's subflow ended in a state other than Completed; the message is its own."""


def _reason(state: State) -> str:
    """Why a run failed, without Prefect's wrapping ("Task run encountered an exception ...")."""
    error = state.result(raise_on_failure=False)
    if isinstance(error, StageFailed):
        return str(error).partition(": ")[2]
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return state.message or state.name


def _result(stage: str, state: State) -> Any:
    if not state.is_completed():
        raise StageFailed(f"{stage}: {_reason(state)}")
    return state.result()


def _run_id(state: State) -> str:
    return str(state.state_details.flow_run_id)


@task(name="instruction-data", **STAGE)
def instruction_stage(dataset: str, manifest_version: str, coco: str | None, base_mix: str | None,
                      base_image_root: str | None, seed: int) -> dict[str, Any]:
    """Listing + QA (+ mix.json with a base mix) for one manifest version of the dataset."""
    state = build_instruction_dataset(dest=dataset, coco=coco, base_mix=base_mix, base_image_root=base_image_root,
                                      seed=seed, manifest_version=manifest_version, return_state=True)
    card = _result("instruction data", state)
    folder = storage.join(dataset, "datasets", card["version"])
    return {"version": card["version"], "folder": folder, "records": card["records"],
            "mix": storage.join(folder, "mix.json") if card["mix"] else None, "flow_run_id": _run_id(state)}


@task(name="mix", **STAGE)
def mix_stage(instructions: dict[str, Any], dataset: str, output: str, seed: int) -> str:
    """The training file: the build's mix.json, else its listing and QA records shuffled together."""
    if instructions["mix"]:
        return instructions["mix"]
    from som.data.mixing import MixConfig, MixSource, mix

    folder = instructions["folder"]
    sources = [MixSource(storage.join(folder, "som_listing.json"), kind="som-listing"),
               MixSource(storage.join(folder, "som_qa.json"), kind="som-qa", id_prefix="qa-")]
    mix(sources, output, MixConfig(seed=seed, image_root=dataset))
    return output


@task(name="train", **STAGE)
def train_stage(data: str, run_dir: str, image_root: str, config: str | dict | None, overrides: dict | None,
                nodes: int, tasks_per_node: int, gpus_per_node: int, slurm: dict | None,
                executor: str) -> dict[str, Any]:
    state = train_llava(data=data, run_dir=run_dir, image_root=image_root, config=config, overrides=overrides,
                        nodes=nodes, tasks_per_node=tasks_per_node, gpus_per_node=gpus_per_node, slurm=slurm,
                        executor=executor, return_state=True)
    return {"model": _result("training", state), "flow_run_id": _run_id(state)}


@task(name="evaluate", **STAGE)
def evaluate_stage(model: str, benchmarks: list[str], run_dir: str, data: dict[str, str], variants: list[str],
                   shards: int, executor: str, slurm: dict | None, judge: str | None, limit: int | None,
                   options: dict | None) -> dict[str, Any]:
    state = evaluate(model=model, benchmarks=benchmarks, run_dir=run_dir, data=data, variants=variants,
                     shards=shards, executor=executor, slurm=slurm, judge=judge, limit=limit, **(options or {}),
                     return_state=True)
    result = _result("evaluation", state)
    return {"table": result["table"], "scores_dir": storage.join(run_dir, "eval"), "flow_run_id": _run_id(state)}


@flow(name="som-pipeline", flow_run_name="som-pipeline {name}: {source} -> {root}")
def som_pipeline(
    source: str,
    root: str,
    run_root: str | None = None,
    name: str = "samples",
    segmenter: str | None = None,
    segmenter_params: dict[str, Any] | None = None,
    coco: str | None = None,
    short_side: int | None = None,
    shard_size: int = 200,
    workers: int | None = None,
    scheduler: str | None = None,
    base_mix: str | None = None,
    base_image_root: str | None = None,
    seed: int = 0,
    train_config: str | dict | None = None,
    train_overrides: dict | None = None,
    nodes: int = 1,
    tasks_per_node: int = 1,
    gpus_per_node: int = 0,
    slurm: dict | None = None,
    executor: str = "auto",
    benchmarks: list[str] | None = None,
    eval_data: dict[str, str] | None = None,
    eval_variants: list[str] = ["plain", "tags"],  # noqa: B006 - Prefect shows defaults in the UI
    eval_shards: int = 2,
    eval_limit: int | None = None,
    judge: str | None = None,
    eval_options: dict | None = None,
) -> State:
    """Run every stage for the images under `source`, with all outputs under `root`.

    Arguments:
      source: folder or object-store prefix of images; root: where datasets/, mixes/ and
        pipelines/ go (object storage is fine); run_root: where training and evaluation run
        folders go, on a file system every Slurm node sees (default <root>/runs); name: this
        pipeline's dataset and run name.
      segmenter ... scheduler: the dataset build's (see flows/som_dataset.py).
      base_mix, base_image_root, seed: the instruction data's (see flows/instruction_data.py).
      train_config, train_overrides, nodes, tasks_per_node, gpus_per_node: som-train's config
        (YAML path or mapping), overrides and layout; slurm: `som.jobs.JobSpec` fields for
        training and evaluation jobs; executor: auto | slurm | local.
      benchmarks, eval_data: benchmark names and their sources (none: no evaluation);
        eval_variants, eval_shards, eval_limit, judge: som-evaluate's; eval_options: its other
        arguments (batch_size, model_kwargs, tag_options).
    """
    log = get_run_logger()
    dataset = storage.join(root, "datasets", name)
    pipeline_dir = storage.join(root, "pipelines", name)
    results = result_storage_for(pipeline_dir)
    stages = StageLog(f"{root}/{name}", total=5 if benchmarks else 4)

    build = build_som_dataset(source=source, dest=dataset, segmenter=segmenter, segmenter_params=segmenter_params,
                              coco=coco, short_side=short_side, shard_size=shard_size, workers=workers,
                              scheduler=scheduler, return_state=True)
    if not build.is_completed():
        return stages.failed("dataset", build.message)
    report = build.result()
    stages.add("dataset", "nothing new" if not report.new else f"{report.new} new images",
               f"{dataset} (manifest {report.version})", _run_id(build))

    try:
        instructions = stages.run("instruction data", instruction_stage.with_options(result_storage=results),
                                  dataset=dataset, manifest_version=report.version, coco=coco, base_mix=base_mix,
                                  base_image_root=base_image_root, seed=seed)
        version, records = instructions["version"], instructions["records"]
        stages.rows[-1]["output"] = (f"{instructions['folder']} ({records['som_listing']} listing, "
                                     f"{records['som_qa']} QA records)")
        data = stages.run("mix", mix_stage.with_options(result_storage=results), instructions=instructions,
                          dataset=dataset, output=storage.join(root, "mixes", f"{name}-{version}.json"), seed=seed)
        stages.rows[-1]["output"] = data
        # Slurm jobs may start elsewhere: a local run folder travels as an absolute path.
        run_dir = absolute(storage.join(run_root or storage.join(root, "runs"), f"{name}-{version}"))
        trained = stages.run("train", train_stage.with_options(result_storage=results), data=data,
                             run_dir=run_dir, image_root=dataset, config=train_config, overrides=train_overrides,
                             nodes=nodes, tasks_per_node=tasks_per_node, gpus_per_node=gpus_per_node, slurm=slurm,
                             executor=executor)
        stages.rows[-1].update(output=trained["model"], loss=_loss_line(run_dir))
        evaluation = None
        if benchmarks:
            evaluation = stages.run("evaluate", evaluate_stage.with_options(result_storage=results),
                                    model=trained["model"], benchmarks=benchmarks, run_dir=run_dir,
                                    data=eval_data or {}, variants=eval_variants, shards=eval_shards,
                                    executor=executor, slurm=slurm, judge=judge, limit=eval_limit,
                                    options=eval_options)
            stages.rows[-1]["output"] = evaluation["scores_dir"]
    except StageFailed as exc:
        stage, _, message = str(exc).partition(": ")
        return stages.failed(stage, message)

    stages.publish(evaluation["table"] if evaluation else None, f"som-pipeline {name}: every stage and output")
    outputs = {"dataset": dataset, "manifest_version": report.version, "instructions": instructions["folder"],
               "mix": data, "run_dir": run_dir, "model": trained["model"],
               "scores": evaluation["scores_dir"] if evaluation else None}
    storage.write_bytes_atomic(storage.join(pipeline_dir, "outputs.json"), json.dumps(outputs, indent=2).encode())
    log.info("pipeline %s done: %s", name, outputs)
    done = "; ".join(f"{row['stage']}: {row['how']}" for row in stages.rows)
    return Completed(message=f"model {trained['model']}; {done}", data=outputs)


class StageLog:
    """What each stage did (ran, cached, failed; output; subflow run) for the run's summary
    artifact, with a progress artifact advanced as stages finish."""

    def __init__(self, pipeline: str, total: int) -> None:
        self.key = artifact_key(pipeline, "pipeline")
        self.total = total
        self.rows: list[dict[str, Any]] = []
        self.progress = create_progress_artifact(0.0, key=artifact_key(pipeline, "pipeline-progress"),
                                                 description=f"stages done of {total}")

    def add(self, stage: str, how: str, output: str | None = None, flow_run_id: str | None = None) -> None:
        self.rows.append({"stage": stage, "how": how, "output": output, "flow_run_id": flow_run_id})
        update_progress_artifact(self.progress, 100.0 * len(self.rows) / self.total)

    def run(self, stage: str, stage_task: Any, **inputs: Any) -> Any:
        """Run one cached stage task; record whether it ran or came from the cache."""
        state = stage_task(**inputs, return_state=True)
        if not state.is_completed():
            raise StageFailed(f"{stage}: {_reason(state)}")
        result = state.result()
        self.add(stage, "cached" if state.name == "Cached" else "ran", flow_run_id=result.get("flow_run_id")
                 if isinstance(result, dict) else None)
        return result

    def failed(self, stage: str, message: str | None) -> State:
        done = ", ".join(row["stage"] for row in self.rows) or "none"
        self.rows.append({"stage": stage, "how": "FAILED", "output": message})
        self.publish(None, f"failed at {stage}")
        return Failed(message=f"stage '{stage}' failed: {message}. Stages done (cached for the rerun): {done}. "
                              f"Fix the cause and run the pipeline again with the same parameters: it resumes "
                              f"at '{stage}'.")

    def publish(self, table: list[dict[str, Any]] | None, description: str) -> None:
        create_markdown_artifact(_summary_markdown(self.rows, table), key=self.key, description=description)


def _loss_line(run_dir: str) -> str | None:
    """First → final loss from the training run's summary.json, when it wrote one."""
    url = storage.join(run_dir, "summary.json")
    try:
        summary = json.loads(storage.read_bytes(url))
    except (OSError, ValueError):
        return None
    first, final = summary.get("first_loss"), summary.get("final_loss")
    if first is None or final is None:
        return None
    return f"loss {first:.4f} → {final:.4f} over {summary.get('steps', '?')} steps"


def _link(url: str) -> str:
    """A link a browser can open for S3 objects (presigned), else the location as code."""
    if storage.protocol_of(url) in storage.S3_PROTOCOLS and "." in url.rsplit("/", 1)[-1]:
        fs, path = storage.resolve(url)
        return f"[`{url}`]({fs.url(path, expires=PRESIGNED_SECONDS)})"
    return f"`{url}`"


def _summary_markdown(stages: list[dict[str, Any]], table: list[dict[str, Any]] | None) -> str:
    ui = (PREFECT_UI_URL.value() or "").rstrip("/")
    lines = ["# som-pipeline", "", "| stage | done | output | run |", "|---|---|---|---|"]
    for stage in stages:
        output = stage.get("output") or ""
        location = output.split(" (", 1)
        shown = _link(location[0]) + (f" ({location[1]}" if len(location) > 1 else "") if output else ""
        if stage.get("loss"):
            shown += f"<br>{stage['loss']}"
        run = f"[flow run]({ui}/runs/flow-run/{stage['flow_run_id']})" if stage.get("flow_run_id") else ""
        lines.append(f"| {stage['stage']} | {stage['how']} | {shown} | {run} |")
    if table:
        columns = list(table[0])
        lines += ["", "## Benchmarks", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in table]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    som_pipeline(sys.argv[1], sys.argv[2])
