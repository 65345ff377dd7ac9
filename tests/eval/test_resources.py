"""Default Slurm resources of evaluation tasks from the model's size."""

from __future__ import annotations

from pathlib import Path

import pytest

from som.eval.resources import eval_resources, weight_bytes, with_eval_defaults

GB = 10**9


def test_a_13b_model_gets_memory_for_its_weights_and_cpus_with_a_gpu() -> None:
    assert eval_resources(26 * GB, gpus=1) == {"cpus_per_task": 4, "mem_gb": 73.0}  # 2.5 x 26 + 8
    assert eval_resources(14 * GB, gpus=0) == {"mem_gb": 43.0}
    assert eval_resources(50 * 10**6, gpus=0) == {}  # tiny: the defaults hold it
    assert eval_resources(None, gpus=1) == {"cpus_per_task": 4}  # API model or unknown size


def test_the_users_settings_win() -> None:
    chosen = with_eval_defaults({"gpus_per_node": 1, "mem_gb": 0, "partition": "gpu"}, 26 * GB)
    assert chosen == {"gpus_per_node": 1, "mem_gb": 0, "partition": "gpu", "cpus_per_task": 4}
    assert with_eval_defaults({"cpus_per_task": 16, "gpus_per_node": 1}, None)["cpus_per_task"] == 16
    assert with_eval_defaults(None, None) == {}


def test_weight_bytes_of_a_local_folder_counts_one_format(tmp_path: Path) -> None:
    (tmp_path / "model-00001.safetensors").write_bytes(b"x" * 300)
    (tmp_path / "model-00002.safetensors").write_bytes(b"x" * 200)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x" * 900)  # the same weights again
    (tmp_path / "config.json").write_text("{}")
    assert weight_bytes(str(tmp_path)) == 500
    assert weight_bytes("openai:gpt-4o@http://x") is None
    assert weight_bytes("no/such-model", local_files_only=True) is None


@pytest.mark.parametrize("gpus", [0, 1])
def test_defaults_make_a_valid_job_spec(gpus: int) -> None:
    from som.jobs import JobSpec

    spec = JobSpec.from_mapping({"executor": "local", **with_eval_defaults({"gpus_per_node": gpus}, 26 * GB)})
    assert spec.mem_gb == 73.0 and spec.cpus_per_task == (4 if gpus else 1)
