"""The instruction-data flow and `som data build` on a small real SoM dataset."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from flows.instruction_data import build_instruction_dataset
from som.cli import cli
from tests.helpers.som_datasets import som_dataset


def test_flow_writes_a_version_and_its_card(prefect_api, tmp_path: Path):
    dest, _ = som_dataset(tmp_path)
    state = build_instruction_dataset(dest=dest, seed=1, return_state=True)
    assert state.is_completed(), state.message
    card = state.result()
    folder = Path(dest) / "datasets" / card["version"]
    assert card["records"]["som_listing"] == 2 and (folder / "som_qa.json").exists()
    assert "2 listing" in state.message


def test_cli_uses_the_configured_prefect_api(prefect_api, tmp_path: Path):
    dest, _ = som_dataset(tmp_path)
    result = CliRunner().invoke(cli, ["data", "build", dest, "--seed", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    version = (Path(dest) / "datasets" / "_latest").read_text()
    card = json.loads((Path(dest) / "datasets" / version / "card.json").read_text())
    assert card["config"]["seed"] == 2 and "listing" in result.output


def test_cli_fills_unlabeled_tags_with_clip(prefect_api, tmp_path: Path):
    from tests.helpers.tiny_clip import build_tiny_clip

    dest, _ = som_dataset(tmp_path, segmenter="slic")
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    model = build_tiny_clip(tmp_path / "clip")
    result = CliRunner().invoke(
        cli,
        ["data", "build", dest, "--fill-unlabeled", "clip", "--clip-model", model, "--clip-labels", str(labels)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    version = (Path(dest) / "datasets" / "_latest").read_text()
    card = json.loads((Path(dest) / "datasets" / version / "card.json").read_text())
    assert set(card["tag_name_sources"]) == {"clip"}


def test_describer_key_from_a_prefect_secret(prefect_api, tmp_path: Path):
    from prefect.blocks.system import Secret

    from tests.helpers.chat_server import ChatServer, Reply

    dest, rows = som_dataset(tmp_path, segmenter="slic")
    server = ChatServer().start()
    try:
        server.script = [Reply("not a listing")]  # the answer does not matter here, the key does
        Secret(value="sk-test-describer").save("somflow-test-describer", overwrite=True)
        state = build_instruction_dataset(
            dest=dest,
            fill_unlabeled=["describer"],
            describer_model="m",
            describer_base_url=server.url,
            describer_secret="somflow-test-describer",
            return_state=True,
        )
    finally:
        server.stop()
    assert state.is_completed(), state.message
    assert server.requests and all(
        r.headers.get("Authorization") == "Bearer sk-test-describer" for r in server.requests
    )
