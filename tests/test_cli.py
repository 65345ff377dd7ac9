"""`som mark` end to end: real photos, bad files quarantined, resumable re-runs, COCO masks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from som.cli import cli
from tests.helpers.data import data_path

FAST = ["--segmenter", "slic", "--param", "n_segments=20", "--short-side", "200", "--no-progress"]


@pytest.fixture()
def photo_dir(tmp_path: Path) -> Path:
    """Two real photos, two valid-but-unusual images and four bad files."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(data_path("extreme_ironing.jpg"), folder / "ironing.jpg")
    shutil.copy(data_path("waterview.jpg"), folder / "sub" / "waterview.jpg")
    photo = Image.open(data_path("extreme_ironing.jpg"))
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    deep = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(folder / "sixteen_bit.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("not an image at all")
    raw = data_path("waterview.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(raw[: len(raw) // 3])
    shutil.copy(data_path("som_logo.png"), folder / "logo.png")  # genuinely truncated upstream
    return folder


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_marks_good_images_and_quarantines_bad_ones(photo_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    code, output = run("mark", str(photo_dir), "--out", str(out), "--workers", "2", *FAST)
    assert code == 0, output
    assert "8 images: 4 marked" in output and "4 failed" in output
    for stem in ("ironing", "sub/waterview", "cmyk", "sixteen_bit"):
        meta = json.loads((out / f"{stem}.json").read_text())
        assert meta["marks"] and meta["segmenter"]["name"] == "slic"
        assert Image.open(out / f"{stem}.jpg").size == (meta["width"], meta["height"])
        assert min(meta["width"], meta["height"]) == 200
    quarantined = {
        Path(r["source"]).name: r["reason"]
        for r in map(json.loads, (out / "quarantine.jsonl").read_text().splitlines())
    }
    assert set(quarantined) == {"empty.jpg", "notes.png", "truncated.jpg", "logo.png"}
    assert "empty" in quarantined["empty.jpg"]
    assert "not a recognised image" in quarantined["notes.png"]
    assert "truncated" in quarantined["truncated.jpg"] and "truncated" in quarantined["logo.png"]
    assert not list(out.rglob(".*.tmp")), "no temporary files are left behind"


def test_rerun_resumes_and_force_redoes(photo_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    run("mark", str(photo_dir / "ironing.jpg"), str(photo_dir / "cmyk.jpg"), "--out", str(out), "--workers", "1", *FAST)
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    code, output = run(
        "mark", str(photo_dir / "ironing.jpg"), str(photo_dir / "cmyk.jpg"), "--out", str(out), "--workers", "1", *FAST
    )
    assert code == 0 and "2 unchanged" in output
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    code, output = run(
        "mark",
        str(photo_dir / "ironing.jpg"),
        "--out",
        str(out),
        "--workers",
        "1",
        *FAST[:-3],
        "--short-side",
        "160",
        "--no-progress",
    )
    assert "1 marked" in output, "a different style is new work"
    code, output = run("mark", str(photo_dir / "cmyk.jpg"), "--out", str(out), "--force", "--workers", "1", *FAST)
    assert "1 marked" in output


def test_exit_code_is_non_zero_only_when_nothing_was_processed(photo_dir: Path, tmp_path: Path):
    code, output = run(
        "mark", str(photo_dir / "empty.jpg"), str(photo_dir / "notes.png"), "--out", str(tmp_path / "o"), *FAST
    )
    assert code == 1 and "2 failed" in output


def test_coco_masks_name_the_tags(tmp_path: Path):
    folder = tmp_path / "coco"
    folder.mkdir()
    shutil.copy(data_path("extreme_ironing.jpg"), folder / "000001.jpg")
    shutil.copy(data_path("waterview.jpg"), folder / "unlisted.jpg")
    annotations = {
        "images": [{"id": 1, "file_name": "000001.jpg", "width": 570, "height": 380}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "area": 0,
                "bbox": [0, 0, 0, 0],
                "segmentation": [[250, 40, 350, 40, 350, 300, 250, 300]],
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 3,
                "iscrowd": 0,
                "area": 0,
                "bbox": [0, 0, 0, 0],
                "segmentation": [[0, 150, 200, 150, 200, 330, 0, 330]],
            },
        ],
    }
    masks = tmp_path / "instances.json"
    masks.write_text(json.dumps(annotations))
    out = tmp_path / "out"
    code, output = run(
        "mark",
        str(folder),
        "--out",
        str(out),
        "--masks",
        str(masks),
        "--label-mode",
        "alpha",
        "--modes",
        "mark,mask,box,contour",
        "--format",
        "png",
        "--no-progress",
    )
    assert code == 0, output
    meta = json.loads((out / "000001.json").read_text())
    assert [(m["label"], m["category"]) for m in meta["marks"]] == [("a", "person"), ("b", "car")]
    assert (out / "000001.png").exists()
    reasons = [json.loads(line)["reason"] for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert reasons == [f"{folder / 'unlisted.jpg'} is not listed in {masks}"]


def test_bad_options_are_usage_errors(tmp_path: Path):
    image = str(data_path("extreme_ironing.jpg"))
    code, output = run("mark", image, "--out", str(tmp_path), "--modes", "mark,glow", *FAST)
    assert code == 2 and "modes.1: Input should be 'mark', 'mask', 'box' or 'contour'" in output
    code, output = run("mark", image, "--out", str(tmp_path), "--segmenter", "nope")
    assert code == 2 and "unknown segmenter" in output
    code, output = run("mark", image, "--out", str(tmp_path), "--segmenter", "slic", "--param", "n_segments=many")
    assert code == 2 and "n_segments" in output


def test_auto_segmenter_falls_back_to_slic_without_sam_weights(tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setenv("SOMFLOW_CACHE", str(tmp_path / "cache"))
    code, output = run(
        "mark",
        str(data_path("extreme_ironing.jpg")),
        "--out",
        str(tmp_path / "o"),
        "--short-side",
        "128",
        "--no-progress",
    )
    assert code == 0 and "1 marked" in output
    assert json.loads((tmp_path / "o" / "extreme_ironing.json").read_text())["segmenter"]["name"] == "slic"
    assert "using the CPU 'slic' segmenter" in caplog.text


def test_installed_console_script_helps_a_newcomer():
    som = shutil.which("som") or str(Path(sys.executable).parent / "som")
    done = subprocess.run([som, "--help"], capture_output=True, text=True, check=True)
    assert "som mark" in done.stdout and "mark" in done.stdout
    done = subprocess.run([som, "mark", "--help"], capture_output=True, text=True, check=True)
    for option in ("--out", "--segmenter", "--masks", "--label-mode", "--modes", "--short-side", "--format"):
        assert option in done.stdout
    listing = subprocess.run([som, "segmenters"], capture_output=True, text=True, check=True).stdout
    assert all(name in listing for name in ("sam:", "slic:", "felzenszwalb:", "coco:", "points_per_side"))


# Issue 16.4: how many processes `som mark` runs. GPU-model segmenters (sam, hf-sam) run in one
# process whatever the GPU count: each extra process would load its own model copy onto GPU 0.
@pytest.mark.parametrize("gpus", [0, 1, 4])
@pytest.mark.parametrize(("requested", "expected_cpu"), [(0, 8), (1, 1), (3, 3)])
def test_mark_processes(gpus: int, requested: int, expected_cpu: int, caplog):
    from som.mark.batch import mark_processes

    assert mark_processes(requested, segmenter="slic", uses_gpu=False, gpus=gpus, cpus=8) == expected_cpu
    for name in ("sam", "hf-sam"):
        caplog.clear()
        assert mark_processes(requested, segmenter=name, uses_gpu=True, gpus=gpus, cpus=8) == 1
        assert ("ignoring --workers 3" in caplog.text) == (requested == 3)
        assert (f"({gpus} visible)" in caplog.text) == (requested == 3 and gpus > 0)


def test_mark_processes_without_a_cpu_count():
    from som.mark.batch import mark_processes

    assert mark_processes(0, segmenter="slic", uses_gpu=False, gpus=0, cpus=None) == 1


def test_registry_marks_the_gpu_model_segmenters():
    from som.segment import available

    assert {name for name, spec in available().items() if spec.uses_gpu} == {"sam", "hf-sam"}


def test_a_missing_optional_dependency_names_its_extra() -> None:
    """`som` without the orchestration stack: the command says which extra to install."""
    code = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def fake(name, *args, **kwargs):\n"
        "    if name.partition('.')[0] == 'prefect':\n"
        "        raise ModuleNotFoundError(f\"No module named '{name}'\", name=name)\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = fake\n"
        "sys.argv = ['som', 'dataset', 'build', 'src', 'dest']\n"
        "from som.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "somflow[orchestrate]" in done.stderr and "Traceback" not in done.stderr


def test_another_package_named_flows_is_reported_not_run(tmp_path: Path) -> None:
    """`flows` is a generic name: a foreign one found first is named, never half-used."""
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "__init__.py").write_text("")
    (tmp_path / "flows" / "cli.py").write_text("import click\n\n@click.group()\ndef dataset():\n    pass\n")
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); sys.argv = ['som', 'dataset', '--help']; "
        "from som.cli import main; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "is not somflow's" in done.stderr and str(tmp_path) in done.stderr
