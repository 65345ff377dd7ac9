#!/usr/bin/env bash
# The main job on embedded defaults, on one machine:
#   1. a local S3 server (SeaweedFS) on 127.0.0.1, state under .state/s3;
#   2. the sample photos uploaded to s3://somflow/raw/samples;
#   3. the Set-of-Mark dataset flow (Prefect + a local Dask cluster) marking them into
#      s3://somflow/datasets/samples, with SAM if its checkpoint is cached, else SLIC.
# Run it again: nothing new is marked. Stop the S3 server: python infra/storage/seaweed.py down --state .state/s3
set -euo pipefail
cd "$(dirname "$0")/.."
state=${SOMFLOW_STATE:-.state}
python=.venv/bin/python

"$python" infra/storage/seaweed.py up --state "$state/s3" --bucket somflow
set -a
. "$state/s3/s3.env"
set +a

samples=(tests/data)
[ -d ../shared/reference/images ] && samples+=(../shared/reference/images)
"$python" - "${samples[@]}" <<'PY'
import sys
from pathlib import Path

from som import storage
from som.images import IMAGE_EXTENSIONS

files = {p.name: p for folder in sys.argv[1:] for p in sorted(Path(folder).rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS}
storage.write_many({storage.join("s3://somflow/raw/samples", name): p.read_bytes() for name, p in files.items()})
print(f"uploaded {len(files)} sample images to s3://somflow/raw/samples")
PY

.venv/bin/som dataset build s3://somflow/raw/samples s3://somflow/datasets/samples --workers 2
echo "browse: source $state/s3/s3.env, then e.g. .venv/bin/python -c \"from som.dataset.manifest import read_manifest; [print(r.status, r.n_marks, r.source_uri) for r in read_manifest('s3://somflow/datasets/samples')]\""
