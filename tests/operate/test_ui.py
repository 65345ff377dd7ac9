"""The Prefect UI of the stack in headless Chromium: what a person looks at after a dataset run.

Screenshots go to test-artifacts/operate/ (git-ignored) for a person to look at; the
assertions read the rendered DOM (after the UI's JavaScript ran) of the same page load.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess

import httpx
import pytest

from som import storage
from tasks.reports import artifact_key
from tests.helpers.stack import ARTIFACTS_DIR, DatasetRun, Stack

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags that work headless as root in a container without a display or network (INFRA-NOTES).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1400",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)

    def render(url: str, screenshot: str, expected: list[str]) -> str:
        """Load `url` until its text shows every `expected` string (the UI fills lists in after
        its first paint; on a busy machine one load's time budget may end before that), save a
        screenshot as `screenshot` and return the rendered DOM of the last load."""
        target = ARTIFACTS_DIR / screenshot
        for budget in (15_000, 30_000, 60_000):
            target.unlink(missing_ok=True)
            done = subprocess.run(
                [
                    CHROMIUM,
                    *FLAGS,
                    f"--virtual-time-budget={budget}",
                    f"--user-data-dir={profile}",
                    f"--screenshot={target}",
                    "--dump-dom",
                    url,
                ],
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            if all(part in text_of(done.stdout) for part in expected):
                break
        assert target.stat().st_size > 10_000, f"{screenshot}: an empty page?"
        return done.stdout

    return render


def text_of(dom: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def artifact_id(stack: Stack, run: DatasetRun, kind: str) -> str:
    key = artifact_key(run.dest, kind)
    [found] = stack.api("POST", "/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}})
    return found["id"]


def test_runs_page_lists_the_completed_run(stack: Stack, dataset_run: DatasetRun, browser):
    text = text_of(browser(f"{stack.ui_url}/runs", "runs.png", [dataset_run.flow_run["name"]]))
    assert "Can't connect to Server API" not in text, "the UI must talk to this stack's server"
    assert dataset_run.flow_run["name"] in text and "Completed" in text


def test_artifacts_page_lists_the_dataset_artifacts(stack: Stack, dataset_run: DatasetRun, browser):
    keys = [artifact_key(dataset_run.dest, kind) for kind in ("table", "summary", "progress")]
    text = text_of(browser(f"{stack.ui_url}/artifacts", "artifacts.png", keys))
    for key in keys:
        assert key in text, key
    table = text_of(
        browser(
            f"{stack.ui_url}/artifacts/artifact/{artifact_id(stack, dataset_run, 'table')}",
            "dataset-table.png",
            ["manifest rows"],
        )
    )
    assert "images marked" in table and "manifest rows" in table


def test_summary_shows_the_counts_and_marked_samples(stack: Stack, dataset_run: DatasetRun, browser, monkeypatch):
    dom = browser(
        f"{stack.ui_url}/artifacts/artifact/{artifact_id(stack, dataset_run, 'summary')}",
        "summary.png",
        ["Marked samples"],
    )
    assert "Marked samples" in text_of(dom) and "images marked" in text_of(dom)
    images = [html.unescape(src) for src in re.findall(r'<img[^>]*\bsrc="([^"]+)"', dom)]
    samples = [src for src in images if src.startswith(stack.env["AWS_ENDPOINT_URL"])]
    assert samples, f"no marked sample from the stack's S3 among {images}"
    # What the browser was given to load is the marked image stored in the dataset.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, stack.env[name])
    storage.clear_filesystems()
    path = httpx.URL(samples[0]).path.lstrip("/")
    response = httpx.get(samples[0], timeout=30)
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content == storage.read_bytes(f"s3://{path}")
