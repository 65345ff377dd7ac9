"""The som-pipeline flow's stages as cached Prefect tasks, and the run's summary artifact.

Each stage task runs one subflow (instruction data, training, evaluation) or one small step
(the mix) and is cached on its inputs and source (results kept under
`<root>/pipelines/<name>/_prefect`), so a rerun after a failure skips what finished and
resumes at the stage that failed. `StageLog` records what each stage did for the summary.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.settings import PREFECT_UI_URL
from prefect.states import Failed, State

from flows.evaluate import evaluate
from flows.instruction_data import build_instruction_dataset
from flows.train import train_llava
from som import storage
from som.pipeline_config import EvalStage
from tasks.reports import PRESIGNED_SECONDS, artifact_key

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


def run_id(state: State) -> str:
    return str(state.state_details.flow_run_id)


@task(name="instruction-data", **STAGE)
def instruction_stage(
    dataset: str, manifest_version: str, coco: str | None, base_mix: str | None, base_image_root: str | None, seed: int
) -> dict[str, Any]:
    """Listing + QA (+ mix.json with a base mix) for one manifest version of the dataset."""
    state = build_instruction_dataset(
        dest=dataset,
        coco=coco,
        base_mix=base_mix,
        base_image_root=base_image_root,
        seed=seed,
        manifest_version=manifest_version,
        return_state=True,
    )
    card = _result("instruction data", state)
    folder = storage.join(dataset, "datasets", card["version"])
    return {
        "version": card["version"],
        "folder": folder,
        "records": card["records"],
        "mix": storage.join(folder, "mix.json") if card["mix"] else None,
        "flow_run_id": run_id(state),
    }


@task(name="mix", **STAGE)
def mix_stage(instructions: dict[str, Any], dataset: str, output: str, seed: int) -> str:
    """The training file: the build's mix.json, else its listing and QA records shuffled together."""
    if instructions["mix"]:
        return instructions["mix"]
    from som.data.mixing import MixConfig, MixSource, mix

    folder = instructions["folder"]
    sources = [
        MixSource(storage.join(folder, "som_listing.json"), kind="som-listing"),
        MixSource(storage.join(folder, "som_qa.json"), kind="som-qa", id_prefix="qa-"),
    ]
    mix(sources, output, MixConfig(seed=seed, image_root=dataset))
    return output


@task(name="train", **STAGE)
def train_stage(
    data: str,
    run_dir: str,
    image_root: str,
    config: str | dict | None,
    overrides: dict | None,
    nodes: int,
    tasks_per_node: int,
    gpus_per_node: int,
    slurm: dict | None,
    executor: str,
) -> dict[str, Any]:
    state = train_llava(
        data=data,
        run_dir=run_dir,
        image_root=image_root,
        config=config,
        overrides=overrides,
        nodes=nodes,
        tasks_per_node=tasks_per_node,
        gpus_per_node=gpus_per_node,
        slurm=slurm,
        executor=executor,
        return_state=True,
    )
    return {"model": _result("training", state), "flow_run_id": run_id(state)}


@task(name="evaluate", **STAGE)
def evaluate_stage(model: str, run_dir: str, settings: EvalStage, executor: str, slurm: dict | None) -> dict[str, Any]:
    """som-evaluate of the trained model with the pipeline's evaluation settings."""
    state = evaluate(
        model=model, run_dir=run_dir, executor=executor, slurm=slurm, **settings.model_dump(), return_state=True
    )
    result = _result("evaluation", state)
    return {"table": result["table"], "scores_dir": storage.join(run_dir, "eval"), "flow_run_id": run_id(state)}


class StageLog:
    """What each stage did (ran, cached, failed; output; subflow run) for the run's summary
    artifact, with a progress artifact advanced as stages finish."""

    def __init__(self, pipeline: str, total: int) -> None:
        self.key = artifact_key(pipeline, "pipeline")
        self.total = total
        self.rows: list[dict[str, Any]] = []
        self.progress = create_progress_artifact(
            0.0, key=artifact_key(pipeline, "pipeline-progress"), description=f"stages done of {total}"
        )

    def add(self, stage: str, how: str, output: str | None = None, flow_run_id: str | None = None) -> None:
        self.rows.append({"stage": stage, "how": how, "output": output, "flow_run_id": flow_run_id})
        update_progress_artifact(self.progress, 100.0 * len(self.rows) / self.total)

    def run(self, stage: str, stage_task: Any, **inputs: Any) -> Any:
        """Run one cached stage task; record whether it ran or came from the cache."""
        state = stage_task(**inputs, return_state=True)
        if not state.is_completed():
            raise StageFailed(f"{stage}: {_reason(state)}")
        result = state.result()
        self.add(
            stage,
            "cached" if state.name == "Cached" else "ran",
            flow_run_id=result.get("flow_run_id") if isinstance(result, dict) else None,
        )
        return result

    def failed(self, stage: str, message: str | None) -> State:
        done = ", ".join(row["stage"] for row in self.rows) or "none"
        self.rows.append({"stage": stage, "how": "FAILED", "output": message})
        self.publish(None, f"failed at {stage}")
        return Failed(
            message=f"stage '{stage}' failed: {message}. Stages done (cached for the rerun): {done}. "
            f"Fix the cause and run the pipeline again with the same parameters: it resumes "
            f"at '{stage}'."
        )

    def publish(self, table: list[dict[str, Any]] | None, description: str) -> None:
        create_markdown_artifact(_summary_markdown(self.rows, table), key=self.key, description=description)


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
