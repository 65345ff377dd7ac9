#!/usr/bin/env bash
# Set up somflow in ./.venv on a fresh machine (idempotent; a second run takes a second).
#
#   scripts/setup.sh            # then: .venv/bin/som --help
#
# torch + torchvision go in first, pinned by constraints.txt to the pair these machines hold on
# local disk (2.14.1 / 0.29.1, CUDA builds that run on CPU); asking pip for a looser torch first
# makes it download other multi-GB builds. Then somflow itself with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
stamp=.venv/.somflow-setup
# Re-install when the dependencies or the set of top-level packages change (editable installs
# map only the packages that existed when they were made).
wanted=$( (cat pyproject.toml constraints.txt scripts/setup.sh; ls -d */__init__.py) | sha256sum | cut -d' ' -f1)

# The local Slurm cluster (infra/slurm) needs Debian's slurm-wlm, munge and MariaDB.
if ! command -v slurmctld >/dev/null 2>&1 && [ ! -x /usr/sbin/slurmctld ]; then
    if [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; then
        infra/slurm/install.sh
    else
        echo "note: Slurm packages missing and no root: Slurm tests will be skipped (see infra/slurm/install.sh)" >&2
    fi
fi

# The Prefect UI and `som demo` tests drive Debian's chromium headless; the `som chat` tests run
# it under tmux.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if [ -z "$sudo" ] || command -v sudo >/dev/null 2>&1; then
        $sudo apt-get update
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    else
        echo "note: ${missing[*]} missing and no root: the UI, demo and chat tests will be skipped" \
             "(apt-get install ${missing[*]})" >&2
    fi
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
"${pip[@]}" install -q -c constraints.txt torch torchvision
DS_BUILD_OPS=0 "${pip[@]}" install -q -c constraints.txt -e '.[dev]'
"${pip[@]}" check
echo "$wanted" > "$stamp"
echo "somflow is set up in .venv (activate with: . .venv/bin/activate)"
