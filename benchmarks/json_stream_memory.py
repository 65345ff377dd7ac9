"""Peak memory of `som data check` / `som data mix` reading a ~200 MB LLaVA JSON with a
malformed record in the middle (issue 11, item 8).

The old reader, on a decode error, kept reading until the element exceeded 64 Mi characters
("exceeds 67108864 characters or is malformed"), so the peak grew with that limit and the
error lost its position. Each measurement runs in a fresh process (peak RSS via
getrusage); `--tree` runs the same measurement against another checkout (e.g. a copy of the
old code) to compare. The data file is generated under a temporary folder and deleted.

    .venv/bin/python benchmarks/json_stream_memory.py --mb 200 [--tree /tmp/old-checkout]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("json_stream_memory")

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from som.data.check import check_file
path = sys.argv[1]
started = time.perf_counter()
report = check_file(path, exists=lambda _l: True) if path != "-" else None
seconds = time.perf_counter() - started
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
records, fatal = (report.records, report.fatal) if report else (0, "(imports only: the baseline)")
print(json.dumps({"records": records, "fatal": fatal, "seconds": seconds, "peak_mib": peak_mib}))
"""


def write_llava_file(path: Path, megabytes: int) -> tuple[int, int]:
    """A LLaVA-style array of about `megabytes` MB whose middle record is malformed.
    Returns (index of the bad record, its byte offset)."""
    turn = "A fairly long answer about the picture, describing objects and their places. " * 4
    sample = {
        "id": "000000000000",
        "image": "coco/train2017/000000000000.jpg",
        "conversations": [{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": turn}] * 2,
    }
    per_record = len(json.dumps(sample)) + 2
    n = megabytes * 1_000_000 // per_record
    bad, offset = n // 2, -1
    with open(path, "wb") as f:
        f.write(b"[\n")
        for i in range(n):
            sample["id"] = f"{i:012d}"
            sample["image"] = f"coco/train2017/{i:012d}.jpg"
            text = json.dumps(sample).encode()
            if i == bad:
                text = text.replace(b'"from": "gpt"', b'"from": gpt', 1)
                offset = f.tell() + (2 if i else 0) + text.index(b"gpt")
            f.write((b",\n" if i else b"") + text)
        f.write(b"\n]\n")
    return bad, offset


def measure(tree: Path, path: Path | str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], env=env, cwd=tree, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="size of the generated file in MB")
    parser.add_argument("--tree", action="append", default=[], help="another checkout to measure (repeatable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    trees = [REPO, *(Path(t) for t in args.tree)]
    with tempfile.TemporaryDirectory(prefix="som-json-bench-") as tmp:
        path = Path(tmp) / "llava_big.json"
        bad, offset = write_llava_file(path, args.mb)
        size_mb = path.stat().st_size / 1e6
        log.info("file: %.0f MB, malformed record %d at byte %d", size_mb, bad, offset)
        log.info("| checkout | records read | peak RSS MiB | seconds | error |")
        log.info("|---|---:|---:|---:|---|")
        for tree, target in [(REPO, "-"), *((t, path) for t in trees)]:
            row = measure(tree, target)
            log.info(
                "| %s | %d | %.0f | %.1f | %s |",
                tree,
                row["records"],
                row["peak_mib"],
                row["seconds"],
                (row["fatal"] or "")[:110],
            )


if __name__ == "__main__":
    main()
