#!/usr/bin/env bash
# The main job on embedded defaults, on one machine, through the local stack:
#   1. infra/stack.py up: SeaweedFS S3, a Prefect server (UI) with the `somflow` process pool and
#      a worker, and the local Slurm cluster when its packages are installed; state under
#      .state/stack;
#   2. the sample photos uploaded to s3://somflow/raw/samples;
#   3. prefect.yaml deployed, and its `som-dataset/samples` deployment run by the worker: the
#      Set-of-Mark dataset flow (Prefect + a local Dask cluster) marks them into
#      s3://somflow/datasets/samples, with SAM if its checkpoint is cached, else SLIC.
# Run it again: nothing new is marked. The stack stays up for the UI; stop it with
#   .venv/bin/python infra/stack.py down
set -euo pipefail
cd "$(dirname "$0")/.."
state=${SOMFLOW_STATE:-.state}/stack
python=.venv/bin/python

stack_args=(up --state "$state")
if [ "$(id -u)" -ne 0 ] || ! PATH="$PATH:/usr/sbin" command -v slurmctld >/dev/null 2>&1; then
    stack_args+=(--no-slurm)  # the dataset flow does not need Slurm
fi
"$python" infra/stack.py "${stack_args[@]}"
set -a
. "$state/stack.env"
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

.venv/bin/prefect --no-prompt deploy --all >/dev/null
echo "deployed prefect.yaml; running som-dataset/samples through the worker..."
.venv/bin/prefect deployment run som-dataset/samples --watch --watch-timeout 3600 | tail -n 1
"$python" - <<'PY'
from collections import Counter

from som.dataset.manifest import latest_version, read_manifest

dest = "s3://somflow/datasets/samples"
rows = read_manifest(dest)
counts = Counter(row.status for row in rows)
print(f"{dest} (manifest {latest_version(dest)}): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
      + f"; {sum(row.n_marks for row in rows)} marks")
for row in rows:
    if row.status == "failed":
        print(f"  quarantined {row.source_uri}: {row.error}")
PY
echo "browse the runs and artifacts: ${PREFECT_API_URL%/api}/runs   (stop everything: $python infra/stack.py down --state $state)"
# Not started here (it needs a model): the Set-of-Mark chat page, see README "Chat and demo".
echo "chat with a SoM model about your images: .venv/bin/som demo --model MODEL_OR_FOLDER  (or --endpoint NAME=URL of a som serve), then open http://127.0.0.1:7860"
