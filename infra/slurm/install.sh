#!/bin/sh
# Install the Debian packages infra/slurm/cluster.py needs (Debian 12: slurm-wlm 22.05,
# munge 0.5, MariaDB 10.11). Run as root (CI: `sudo infra/slurm/install.sh`). No service
# is started: Debian's policy-rc.d blocks that in containers, and cluster.py starts every
# daemon itself under its own state folder.
set -eu
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    slurmctld slurmd slurm-client slurmdbd munge mariadb-server
