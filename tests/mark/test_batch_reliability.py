"""`som mark` reliability (issue 11): unique output names, dying workers, extreme aspect ratios."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from som.cli import cli
from som.dataset.shard import MarkConfig, mark_source
from som.dataset.sources import SourceImage
from som.mark.batch import collect_jobs, mark_paths
from som.mark.options import MarkOptions
from som.segment import build_segmenter

REPO = Path(__file__).resolve().parents[2]
FAST = ["--segmenter", "slic", "--param", "n_segments=8", "--short-side", "64", "--no-progress"]


def photo(path: Path, seed: int, size: tuple[int, int] = (80, 60)) -> Path:
    """A small distinct image (different bytes per seed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def quarantine(out: Path) -> dict[str, str]:
    path = out / "quarantine.jsonl"
    if not path.exists():
        return {}
    return {r["source"]: r["reason"] for r in map(json.loads, path.read_text().splitlines())}


# --- item 2: output names ---------------------------------------------------------------


def test_colliding_names_get_distinct_stable_outputs(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo(Path("dupA/x.jpg"), 1)
    photo(Path("dupB/x.jpg"), 2)
    photo(Path("flat/a.jpg"), 3)
    photo(Path("flat/a_jpg.jpg"), 4)
    photo(Path("flat/a.png"), 5)
    args = ["dupA/x.jpg", "dupB/x.jpg", "flat", "--out", "out", "--workers", "1", *FAST]
    code, output = run("mark", *args)
    assert code == 0, output
    assert "5 images: 5 marked" in output
    out = tmp_path / "out"
    jsons = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert jsons == ["dupA/x.json", "dupB/x.json", "flat/a.jpg.json", "flat/a.png.json", "flat/a_jpg.json"]
    sources = {json.loads((out / j).read_text())["image"] for j in jsons}
    assert len(sources) == 5, "every JSON describes a different source"
    code, output = run("mark", *args)
    assert code == 0 and "5 unchanged" in output, output


def test_two_roots_with_the_same_file_names_do_not_collide(tmp_path: Path):
    for seed, root in enumerate(("r1/photos", "r2/photos")):
        photo(tmp_path / root / "x.jpg", seed)
        photo(tmp_path / root / "sub" / "y.png", seed + 10)
    out = tmp_path / "out"
    roots = [str(tmp_path / "r1/photos"), str(tmp_path / "r2/photos")]
    code, output = run("mark", *roots, "--out", str(out), "--workers", "2", *FAST)
    assert code == 0 and "4 images: 4 marked" in output, output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json")) == [
        "r1/photos/sub/y.json",
        "r1/photos/x.json",
        "r2/photos/sub/y.json",
        "r2/photos/x.json",
    ]
    code, output = run("mark", *roots, "--out", str(out), "--workers", "2", *FAST)
    assert "4 unchanged" in output, output


def test_single_inputs_keep_their_plain_names(tmp_path: Path):
    photo(tmp_path / "in" / "sub" / "b.jpg", 1)
    photo(tmp_path / "in" / "a.jpg", 2)
    jobs = collect_jobs([tmp_path / "in"], tmp_path / "out", "jpg")
    assert [j.stem.relative_to(tmp_path / "out").as_posix() for j in jobs] == ["a", "sub/b"]
    jobs = collect_jobs([tmp_path / "in" / "a.jpg"], tmp_path / "out", "jpg")
    assert [j.stem.relative_to(tmp_path / "out").as_posix() for j in jobs] == ["a"]


def test_names_equal_but_for_case_or_clashing_with_a_folder_are_made_unique(tmp_path: Path):
    photo(tmp_path / "in" / "A.jpg", 1)
    photo(tmp_path / "in" / "a.png", 2)
    photo(tmp_path / "in" / "a.jpg.png", 3)  # its natural stem "a.jpg" is A.jpg's kept name, folded
    photo(tmp_path / "in" / "k.png", 4)  # its output k.jpg clashes with the folder k.jpg/
    photo(tmp_path / "in" / "k.jpg" / "z.jpg", 5)
    jobs = collect_jobs([tmp_path / "in"], tmp_path / "out", "jpg")
    stems = [j.stem.relative_to(tmp_path / "out").as_posix().casefold() for j in jobs]
    outputs = [s + ext for s in stems for ext in (".json", ".jpg")]
    folders = {str(Path(s).parent) for s in stems}
    assert len(set(stems)) == len(jobs) == 5
    assert not set(outputs) & folders


def test_outputs_inside_an_input_folder_are_not_marked_again(tmp_path: Path):
    photo(tmp_path / "in" / "a.jpg", 1)
    out = tmp_path / "in" / "marked"
    run("mark", str(tmp_path / "in"), "--out", str(out), *FAST)
    code, output = run("mark", str(tmp_path / "in"), "--out", str(out), *FAST)
    assert "1 images: 0 marked" in output and "1 unchanged" in output, output


# --- item 3: a worker that dies ---------------------------------------------------------

DYING_RUN = textwrap.dedent(
    """
    import sys
    from tests.helpers.dying_segmenter import register_dying
    register_dying()
    from som.cli import cli
    cli(sys.argv[1:])
    """
)


def test_a_worker_killed_mid_image_is_retried_once_then_quarantined(tmp_path: Path):
    folder = tmp_path / "in"
    for name in ("a", "b", "c", "d", "e", "f"):
        photo(folder / f"{name}.jpg", ord(name))
    photo(folder / "killer.jpg", 99)
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-c",
        DYING_RUN,
        "mark",
        str(folder),
        "--out",
        str(out),
        "--segmenter",
        "dying",
        "--param",
        f"attempts_dir={attempts}",
        "--short-side",
        "64",
        "--workers",
        "2",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True
    )
    try:
        output, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the run and the workers it started
        process.communicate()
        pytest.fail("som mark hung after a worker died")
    assert process.returncode != 0, output
    assert time.monotonic() - started < 120
    assert "7 images: 6 marked" in output and "1 failed" in output, output
    for name in "abcdef":
        assert (out / f"{name}.json").exists() and (out / f"{name}.jpg").exists()
    assert not (out / "killer.json").exists()
    assert quarantine(out) == {str(folder / "killer.jpg"): "worker died (signal 9) while marking"}
    assert len(list(attempts.iterdir())) == 2, "tried once, retried once, each in its own process"


# --- item 4: extreme aspect ratios and the pixel limit after resizing ------------------------


def strip(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (3000, 1), (200, 30, 30)).save(path)
    assert path.stat().st_size < 3000
    return path


def test_a_3000x1_strip_is_quarantined_fast_without_a_huge_allocation(tmp_path: Path):
    strip(tmp_path / "in" / "strip.png")
    photo(tmp_path / "in" / "ok.jpg", 1)
    out = tmp_path / "out"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    code, output = run("mark", str(tmp_path / "in"), "--out", str(out), "--workers", "1", *FAST[:-3], "--no-progress")
    seconds = time.perf_counter() - started
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert code == 0 and "2 images: 1 marked" in output and "1 failed" in output, output
    reason = quarantine(out)[str(tmp_path / "in" / "strip.png")]
    assert "aspect ratio" in reason and "3000x1" in reason and "30:1" in reason
    assert seconds < 20 and grown_mib < 500


def test_the_aspect_ratio_limit_is_configurable(tmp_path: Path):
    path = photo(tmp_path / "pano.jpg", 1, size=(400, 10))  # 40:1
    summary = mark_paths(
        [path], tmp_path / "o1", build_segmenter("slic", {"n_segments": 4}), MarkOptions(short_side=16), progress=False
    )
    assert summary.count("failed") == 1 and "40.0:1" in summary.reports[0].reason
    summary = mark_paths(
        [path],
        tmp_path / "o2",
        build_segmenter("slic", {"n_segments": 4}),
        MarkOptions(short_side=16),
        progress=False,
        max_aspect_ratio=50,
    )
    assert summary.count("marked") == 1


def test_the_dataset_per_image_path_fails_the_strip_with_a_reason(tmp_path: Path):
    source = strip(tmp_path / "strip.png")
    item = SourceImage(uri=str(source), size=source.stat().st_size, fingerprint="1:1")
    config = MarkConfig(segmenter="slic", segmenter_params={"n_segments": 8})
    row = mark_source(item, str(tmp_path / "dest"), config, build_segmenter("slic", {"n_segments": 8}))
    assert row.status == "failed" and "aspect ratio" in row.error
    assert not list((tmp_path / "dest").rglob("*")) if (tmp_path / "dest").exists() else True
