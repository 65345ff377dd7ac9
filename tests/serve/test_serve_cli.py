"""`som serve` as a newcomer meets it: the help, and one-line errors (no tracebacks) for what
this machine or the arguments cannot do; the `served:RUN` model spec's checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from som.cli import cli
from som.eval.model_check import ModelSpecError, check_model_spec
from som.eval.models import load_model
from som.eval.profiles import ProfileError
from som.serve.endpoint import EndpointError, write_endpoint
from tests.helpers.tiny_llava import build_tiny_llava


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_help_says_what_to_do() -> None:
    code, text = run("serve", "--help")
    assert code == 0
    for expected in ("som serve runs/my-run/export", "--slurm", "served:", "som serve stop", "som serve start --help"):
        assert expected in text
    code, text = run("serve", "start", "--help")
    assert code == 0 and "--tags [none|auto]" in text and "--api-key" in text and "SOMFLOW_API_KEY" in text
    code, top = run("--help")
    assert "serve" in top


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--slurm"], "--slurm needs --run-dir"),
        (["--load-in-4bit", "--load-in-8bit"], "one of --load-in-4bit and --load-in-8bit"),
        (["--prompt-profile", "vicuna"], "unknown prompt profile 'vicuna'"),
        (
            ["--tags", "auto", "--segmenter", "slic", "--mark-option", "colour=red"],
            "mark_options: unknown key 'colour'",
        ),
    ],
)
def test_bad_arguments_are_one_line_errors(folder: str, args: list[str], says: str) -> None:
    code, text = run("serve", folder, "--local-files-only", *args)
    assert code != 0 and says in text and "Traceback" not in text


def test_quantization_without_cuda_is_a_clear_error(folder: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, text = run("serve", folder, "--local-files-only", "--load-in-4bit")
    assert code == 1 and "needs a CUDA GPU" in text and "Traceback" not in text


def test_missing_model_folder(tmp_path: Path) -> None:
    code, text = run("serve", str(tmp_path / "nope"))
    assert code == 1 and "does not exist" in text


def test_port_in_use_is_a_clear_error(folder: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, text = run("serve", folder, "--local-files-only", "--port", str(taken.getsockname()[1]))
    assert code == 1 and "cannot listen on 127.0.0.1" in text


def test_served_spec_checks(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="no endpoint.json"):
        check_model_spec(f"served:{tmp_path}")
    with pytest.raises(EndpointError, match="no server is running"):
        load_model(f"served:{tmp_path}")
    write_endpoint(tmp_path, {"url": "http://127.0.0.1:9/v1", "model": "m"})
    check_model_spec(f"served:{tmp_path}")
    with pytest.raises(ProfileError, match="the server applies its own"):
        check_model_spec(f"served:{tmp_path}", prompt_profile="llava-1.5")
    model = load_model(
        f"served:{tmp_path}", max_new_tokens=7, batch_size=4, device="cpu", dtype="auto", local_files_only=True
    )
    assert model.name == "m" and model.max_tokens == 7 and model.client.base_url == "http://127.0.0.1:9/v1"
    write_endpoint(tmp_path, {"url": "http://127.0.0.1:9/v1", "model": "m", "tags": "auto"})
    with pytest.raises(ValueError, match="--tags none"):
        load_model(f"served:{tmp_path}")
