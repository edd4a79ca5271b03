#!/usr/bin/env bash
# Install what tests/cluster/slurm_one_node.py needs to run a one-node Slurm cluster on this machine.
# Idempotent: packages already installed are left alone, and nothing is started here (the tests start
# their own private daemons under a temporary folder).
#   slurm-wlm, munge        the cluster itself (slurmctld, slurmd, clients) and its authentication
#   slurmdbd, mariadb-server accounting, needed only for `one_node_slurm(..., accounting=True)`: sacct,
#                            which submitit polls for job states, answers only through slurmdbd
# Usage: sudo tests/cluster/install_slurm.sh            (Debian/Ubuntu, needs root for apt-get)
set -euo pipefail

packages=(slurm-wlm munge slurmdbd mariadb-server)

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install_slurm.sh: already installed: ${packages[*]}"
else
    if [ "$(id -u)" -ne 0 ]; then
        echo "install_slurm.sh: need root to apt-get install ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # policy-rc.d in containers (and no systemd) keeps the packages' own services from starting; that is wanted.
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

dpkg-query -W -f='${Package} ${Version}\n' "${packages[@]}"
